"""Compatibility re-export for test files written before tests/helpers/oip_models.py."""

from tests.helpers.oip_models import *  # noqa: F403
