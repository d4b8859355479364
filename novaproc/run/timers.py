"""The supervisor's timers: when a failed task's next attempt may start (backoff), and when a
running task's timeout strikes. Times are on the injected clock, so tests need not sleep.
"""

from __future__ import annotations

from collections.abc import Callable

BACKOFF_FIRST, BACKOFF_MAX = 1.0, 300.0  # seconds before a retry (retry_delay), doubling per attempt


class Timers:
    def __init__(self, clock: Callable[[], float], first_backoff: float = BACKOFF_FIRST) -> None:
        self.clock, self.first_backoff = clock, first_backoff
        self._retry_at: dict[str, float] = {}  # task -> when its next attempt may start
        self._deadlines: dict[str, float] = {}  # running task -> when its timeout strikes

    # -- retries

    def retry_later(self, task_id: str, attempts: int) -> float:
        """Schedule `task_id`'s next attempt after `attempts` failed ones; the backoff."""
        backoff = min(self.first_backoff * 2 ** (attempts - 1), max(BACKOFF_MAX, self.first_backoff))
        self._retry_at[task_id] = self.clock() + backoff
        return backoff

    def retry_now(self, task_id: str) -> None:
        """`task_id` may start again at once (no attempt of its failed)."""
        self._retry_at[task_id] = self.clock()

    def due_retries(self) -> list[str]:
        now = self.clock()
        return [t for t, at in self._retry_at.items() if at <= now]

    def retrying(self) -> bool:
        return bool(self._retry_at)

    def take_retry(self, task_id: str) -> bool:
        """The attempt of `task_id` starting now was a scheduled retry (True), or its first."""
        return self._retry_at.pop(task_id, None) is not None

    def drop_retries(self) -> list[str]:
        """Forget every scheduled retry (the run stops); the tasks that had one."""
        dropped, self._retry_at = list(self._retry_at), {}
        return dropped

    # -- timeouts

    def start_deadline(self, task_id: str, timeout: float | None) -> None:
        if timeout is not None:
            self._deadlines[task_id] = self.clock() + timeout

    def clear_deadline(self, task_id: str) -> None:
        self._deadlines.pop(task_id, None)

    def expired(self) -> list[str]:
        """Running tasks whose timeout struck now; each is told once."""
        now = self.clock()
        struck = [t for t, at in self._deadlines.items() if now >= at]
        for tid in struck:
            del self._deadlines[tid]
        return struck

    def next_wake(self) -> float | None:
        """Seconds until the next timer, or None for none. A retry already due waits for a
        slot or a lock like any ready task: it is no timer."""
        now = self.clock()
        times = [*self._deadlines.values(), *(at for at in self._retry_at.values() if at > now)]
        return max(0.0, min(times) - now) if times else None
