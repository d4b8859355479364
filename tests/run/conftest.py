"""The run loop's tests drive real runs: one that hangs fails instead of hanging the suite."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

HANG_GUARD = 60  # seconds: a run that takes longer has hung


@pytest.fixture
def hang_guard() -> Iterator[None]:
    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"the run did not end within {HANG_GUARD}s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(HANG_GUARD)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)
