"""Groundwork: calls made on real threads, continued on the caller's (the loop's) thread."""

from __future__ import annotations

import select
import threading
from concurrent.futures import Future

import pytest

from novaproc.errors import NovaError
from novaproc.run.groundwork import Groundwork, Outcome


def wait_readable(fd: int, seconds: float = 10.0) -> None:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    assert poller.poll(seconds * 1000), "the loop was not woken"


def test_without_threads_a_call_is_continued_at_once() -> None:
    work = Groundwork(0)
    seen: list[object] = []
    work.do("t", lambda: 42, lambda f: seen.append(f.result()))
    assert seen == [42] and not work.busy("t") and work.fileno() is None

    def fails() -> int:
        raise NovaError("no worktree")
    outcomes: list[Outcome[int]] = []
    work.do("t", fails, outcomes.append)
    with pytest.raises(NovaError, match="no worktree"):
        outcomes[0].result()


def test_a_call_made_at_once_starts_no_thread() -> None:
    work = Groundwork(2)
    seen: list[object] = []
    work.do("t", lambda: threading.get_ident(), lambda f: seen.append(f.result()), at_once=True)
    assert seen == [threading.get_ident()] and work.fileno() is None  # nothing to wait for
    work.close()


def test_calls_run_at_once_and_are_continued_on_the_loop() -> None:
    work = Groundwork(3)
    together = threading.Barrier(3, timeout=10)  # met only if the three calls run at once
    loop = threading.get_ident()
    continued: dict[str, tuple[int, int]] = {}

    def call(n: int) -> int:
        together.wait()
        return n * 10

    def then(key: str, future: Future[int]) -> None:
        continued[key] = (future.result(), threading.get_ident())

    for n in range(3):
        work.do(f"t{n}", lambda n=n: call(n), lambda f, key=f"t{n}": then(key, f))
    assert all(work.busy(f"t{n}") for n in range(3))
    fd = work.fileno()
    assert fd is not None
    while len(continued) < 3:
        wait_readable(fd)
        work.settle()
    assert continued == {f"t{n}": (n * 10, loop) for n in range(3)}
    assert not any(work.busy(f"t{n}") for n in range(3))
    work.close()


def test_a_threads_exception_reaches_the_continuation_and_close_waits_for_calls_under_way() -> None:
    work = Groundwork(2)
    began, release, done = threading.Event(), threading.Event(), threading.Event()
    outcomes: list[Outcome[None]] = []

    def fails() -> None:
        raise NovaError("setup failed")

    def slow() -> None:
        began.set()
        release.wait(10)
        done.set()

    work.do("a", fails, outcomes.append)
    fd = work.fileno()
    assert fd is not None
    wait_readable(fd)
    work.settle()
    with pytest.raises(NovaError, match="setup failed"):
        outcomes[0].result()

    work.do("b", slow, outcomes.append)
    assert began.wait(10)
    threading.Timer(0.2, release.set).start()
    work.close()  # returns only once `slow` has ended
    assert done.is_set()
    work.close()  # idempotent
