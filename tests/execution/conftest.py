"""Fixtures of the execution tests."""

from support.pool import pool  # noqa: F401 (a fixture: the pools a test made, shut at its end)
