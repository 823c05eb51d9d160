"""Compatibility re-export for test files written before tests/helpers/handlers.py."""

from tests.helpers.handlers import *  # noqa: F403
