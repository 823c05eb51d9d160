"""Compatibility re-export for test files written before tests/helpers/grpc_stubs.py."""

from tests.helpers.grpc_stubs import *  # noqa: F403
