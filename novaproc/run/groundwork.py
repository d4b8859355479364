"""The slow part of starting and ending a task (making its worktree, committing its result)
done on threads beside the run loop, as many at once as there are slots, so that the loop goes
on handing out slots and hearing reports while git works. Where that part is instant (a task run
in place) it is done at once, on the loop; a run with no slow part starts no thread.

A thread only calls; what follows is the loop's: `settle()` runs each finished call's
continuation on the loop's thread, which alone touches the run's records, schedule and journal.
"""

from __future__ import annotations

import contextlib
import os
import queue
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
MAX_THREADS = 32  # git processes at once beyond which a machine only thrashes its disk


class Outcome(Protocol[T_co]):
    """How a call ended: its value, or (raised by `result()`) its exception."""

    def result(self) -> T_co: ...


class Groundwork:
    """Calls made for a task and continued on the loop: at once (`threads` 0), or on a thread."""

    def __init__(self, threads: int) -> None:
        self._size = min(threads, MAX_THREADS)  # 0: every call at once
        self._threads: ThreadPoolExecutor | None = None  # from the first call made on one
        self._wake_r = self._wake_w = -1
        self._done: queue.SimpleQueue[tuple[str, Future[object], Callable[[Outcome[object]], None]]] = \
            queue.SimpleQueue()
        self._busy: Counter[str] = Counter()  # task id -> its calls not yet continued

    def fileno(self) -> int | None:
        """Readable when a call has finished: for the loop's wait (None: no thread yet)."""
        return self._wake_r if self._threads is not None else None

    def do(self, key: str, call: Callable[[], T], then: Callable[[Outcome[T]], None], *,
           at_once: bool = False) -> None:
        """Run `call` for task `key` on a thread (or `at_once`, on the loop); `then` gets its
        outcome on the loop."""
        if at_once or not self._size:
            then(_now(call))
            return
        if self._threads is None:
            self._start()
        assert self._threads is not None
        self._busy[key] += 1
        future = self._threads.submit(call)
        future.add_done_callback(lambda f: self._post(key, f, then))  # type: ignore[arg-type]

    def busy(self, key: str) -> bool:
        return self._busy[key] > 0

    def working(self) -> bool:
        return bool(self._busy)

    def settle(self) -> None:
        """On the loop: continue every call that has finished."""
        if self._threads is None:
            return
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 65536)
        while True:
            try:
                key, future, then = self._done.get_nowait()
            except queue.Empty:
                return
            self._busy[key] -= 1
            if not self._busy[key]:
                del self._busy[key]
            then(future)

    def close(self) -> None:
        """Wait for the calls under way and drop those not begun (the run is over: nothing
        continues them); later calls are made at once. Idempotent."""
        self._size = 0
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)
            self._threads = None
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _start(self) -> None:
        """The threads, started once the run's workers were forked (a fork copies one thread)."""
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._threads = ThreadPoolExecutor(self._size, "novaproc-groundwork")

    def _post(self, key: str, future: Future[object], then: Callable[[Outcome[object]], None]) -> None:
        """From a thread: into the queue, and wake the loop."""
        self._done.put((key, future, then))
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")


@dataclass(frozen=True, slots=True)
class _Ended(Generic[T]):
    """A call made at once: lighter than a Future, which the loop would make twice a task."""

    value: T | None = None
    error: Exception | None = None

    def result(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


def _now(call: Callable[[], T]) -> Outcome[T]:
    try:
        return _Ended(call())
    except Exception as e:  # as a thread's: the continuation's result() raises it
        return _Ended(error=e)
