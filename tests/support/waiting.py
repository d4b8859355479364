"""Polling with a deadline, in the test and in a task's shell."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], what: str = "condition", timeout: float = 20.0,
               every: float = 0.02) -> T:
    """Poll `check` until it returns something true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def wait_for_file(path: Path, timeout: float = 20.0) -> None:
    """Until `path` exists (a guard in shell: tasks that wait never hang a test forever)."""
    wait_until(path.exists, f"{path} to appear", timeout)


def shell_wait_for(path: Path, limit: float = 30.0) -> str:
    """A shell snippet that waits until `path` exists, at most `limit` seconds."""
    return (f'i=0; while [ ! -e "{path}" ] && [ $i -lt {int(limit * 20)} ]; do sleep 0.05; '
            "i=$((i+1)); done")
