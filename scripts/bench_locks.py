"""Benchmark novaproc's locks beside raw fcntl.flock, portalocker and filelock (when installed).

For one path and for a 10-path lock set: uncontended acquire+release per second; hand-off
latency (2 processes taking turns: a holder's release to the blocked waiter holding it); and,
with 4 processes that re-request at once, throughput and the worst (and 99th percentile) wait
against the mean wait, leaving out the first 50 ms. Every contended run also checks its own
log: two critical sections that overlapped would be counted.

    parent --fork--> 2 workers: take turns; shared values say "I wait" and "released at t"
    parent --fork--> 4 workers: wait at a barrier, loop {t_req; acquire; t_in; hold; t_out;
                     release} until the deadline, send the (t_req, t_in, t_out) log back

    python scripts/bench_locks.py [--seconds S]
"""

from __future__ import annotations

import argparse
import bisect
import fcntl
import itertools
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Protocol

import portalocker

from novaproc.locking.manager import LockManager, LockRequest

HOLD = 0.0001  # seconds of work inside each critical section
WARM_UP = 0.05  # seconds at the start of a contended run left out of the wait figures (cold caches)
Interval = tuple[float, float, float]  # t_req, t_in, t_out (time.monotonic, one clock machine-wide)
Row = tuple[str, float, str]


class Lock(Protocol):
    def acquire(self) -> None: ...
    def release(self) -> None: ...
    def close(self) -> None: ...


class NovaLock:
    def __init__(self, folder: Path, paths: Sequence[Path]) -> None:
        self.manager = LockManager(folder / "nova")
        self.request = LockRequest("bench", exclusive=tuple(str(p) for p in paths))
        self.grant = None

    def acquire(self) -> None:
        self.grant = self.manager.acquire(self.request)

    def release(self) -> None:
        self.manager.release(self.grant)

    def close(self) -> None:
        self.manager.close()


class FlockLock:
    """Raw fcntl.flock on one file per path, taken in sorted order (no deadlock)."""

    def __init__(self, folder: Path, paths: Sequence[Path]) -> None:
        self.fds = [os.open(f"{p}.flock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC) for p in sorted(paths)]

    def acquire(self) -> None:
        for fd in self.fds:
            fcntl.flock(fd, fcntl.LOCK_EX)

    def release(self) -> None:
        for fd in reversed(self.fds):
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


class PortalockerBlocking:
    """portalocker.lock with blocking flags (the kernel queues the waiters)."""

    def __init__(self, folder: Path, paths: Sequence[Path]) -> None:
        self.files = [open(f"{p}.portalocker", "a") for p in sorted(paths)]  # noqa: SIM115

    def acquire(self) -> None:
        for fh in self.files:
            portalocker.lock(fh, portalocker.LockFlags.EXCLUSIVE)

    def release(self) -> None:
        for fh in reversed(self.files):
            portalocker.unlock(fh)

    def close(self) -> None:
        for fh in self.files:
            fh.close()


class PortalockerDefaults:
    """portalocker.Lock as documented: non-blocking tries every 0.25 s, 5 s timeout."""

    def __init__(self, folder: Path, paths: Sequence[Path]) -> None:
        self.locks = [portalocker.Lock(f"{p}.portalocker", timeout=5) for p in sorted(paths)]

    def acquire(self) -> None:
        for lock in self.locks:
            lock.acquire()

    def release(self) -> None:
        for lock in reversed(self.locks):
            lock.release()

    def close(self) -> None:
        pass


def _filelock_class() -> type | None:
    try:
        import filelock
    except ImportError:
        return None

    class FileLockDefaults:
        """filelock.FileLock with its defaults (polls every 0.05 s)."""

        def __init__(self, folder: Path, paths: Sequence[Path]) -> None:
            self.locks = [filelock.FileLock(f"{p}.filelock") for p in sorted(paths)]

        def acquire(self) -> None:
            for lock in self.locks:
                lock.acquire()

        def release(self) -> None:
            for lock in reversed(self.locks):
                lock.release()

        def close(self) -> None:
            pass

    return FileLockDefaults


# ------------------------------------------------------------------------------ measuring

def _hold(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _worker(make: Callable[..., Lock], folder: Path, paths: Sequence[Path], seconds: float,
            barrier: multiprocessing.synchronize.Barrier, out: multiprocessing.Queue) -> None:
    lock = make(folder, paths)
    log: list[Interval] = []
    barrier.wait()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        t_req = time.monotonic()
        try:
            lock.acquire()
        except portalocker.LockException:
            continue  # portalocker's default timeout ran out: not a sample
        t_in = time.monotonic()
        _hold(HOLD)
        t_out = time.monotonic()
        lock.release()
        log.append((t_req, t_in, t_out))
    lock.close()
    out.put(log)


def contend(make: Callable[..., Lock], folder: Path, paths: Sequence[Path], procs: int,
            seconds: float) -> list[Interval]:
    """Run `procs` workers on the same lock set; their merged log, ordered by entry."""
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(make, folder, paths, seconds, barrier, out))
               for _ in range(procs)]
    for w in workers:
        w.start()
    logs = [out.get(timeout=seconds + 60) for _ in workers]
    for w in workers:
        w.join()
    return sorted((i for log in logs for i in log), key=lambda i: i[1])


def _ping_pong(make: Callable[..., Lock], folder: Path, paths: Sequence[Path], me: int, rounds: int,
               turn: Synchronized, released_at: Synchronized, out: multiprocessing.Queue) -> None:
    """Hold, wait until the other process is blocked on the lock, release, wait until it holds.

    `turn` counts the steps: 2r+1 = the holder of round r holds, 2r+2 = its waiter is about to
    block. Waiting for the next holder before trying again keeps an unfair lock from being
    taken straight back.
    """
    lock = make(folder, paths)
    handoffs: list[float] = []
    if me == 0:
        lock.acquire()
        turn.value = 1
    for r in range(rounds):
        if r % 2 == me:
            _wait_turn(turn, 2 * r + 2)
            time.sleep(0.005)  # the other is inside acquire() by now
            released_at.value = time.monotonic()
            lock.release()
            _wait_turn(turn, 2 * r + 3)
        else:
            _wait_turn(turn, 2 * r + 1)
            turn.value = 2 * r + 2
            lock.acquire()
            handoffs.append(time.monotonic() - released_at.value)
            turn.value = 2 * r + 3
    if rounds % 2 == me:
        lock.release()
    lock.close()
    out.put(handoffs)


def _wait_turn(turn: Synchronized, value: int) -> None:
    while turn.value < value:
        time.sleep(0.0002)


def handoffs(make: Callable[..., Lock], folder: Path, paths: Sequence[Path], rounds: int) -> list[float]:
    """Seconds from a holder's release to the blocked waiter holding the lock, both ways."""
    ctx = multiprocessing.get_context("fork")
    turn, released_at, out = ctx.Value("i", 0), ctx.Value("d", 0.0), ctx.Queue()
    pair = [ctx.Process(target=_ping_pong, args=(make, folder, paths, me, rounds, turn, released_at, out))
            for me in (0, 1)]
    for p in pair:
        p.start()
    found = [h for _ in pair for h in out.get(timeout=rounds * 6 + 60)]
    for p in pair:
        p.join()
    return found


def overlaps(log: list[Interval]) -> int:
    return sum(1 for a, b in itertools.pairwise(log) if b[1] < a[2])


def order(log: list[Interval]) -> tuple[int, int]:
    """(the most requests made after one that held before it, the grants before the longest
    wait): with first come, first served and 4 processes, 0 and at most 3, however slow."""
    ins = [i[1] for i in log]  # log is ordered by entry
    most, worst = 0, max(log, key=lambda i: i[1] - i[0])
    for t_req, t_in, _ in log:
        lo, hi = bisect.bisect_right(ins, t_req), bisect.bisect_left(ins, t_in)
        most = max(most, sum(1 for other in log[lo:hi] if other[0] > t_req))
    return most, bisect.bisect_left(ins, worst[1]) - bisect.bisect_right(ins, worst[0])


def uncontended(make: Callable[..., Lock], folder: Path, paths: Sequence[Path], seconds: float) -> float:
    lock = make(folder, paths)
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            lock.acquire()
            lock.release()
        n += 100
    lock.close()
    return n / elapsed


def _bench(name: str, make: Callable[..., Lock], folder: Path, shape: str, paths: Sequence[Path],
           seconds: float, contended: bool) -> list[Row]:
    label = f"{name}, {shape}"
    rows: list[Row] = []
    if contended:
        rows.append((f"{label}: uncontended acquire+release", uncontended(make, folder, paths, seconds),
                     "per second"))
    pair = handoffs(make, folder, paths, rounds=int(200 * seconds) if contended else 8)
    rows.append((f"{label}: hand-off", 1000 * statistics.mean(pair),
                 f"ms mean, median {1000 * statistics.median(pair):.3f}, worst {1000 * max(pair):.3f}"))
    if not contended:
        return rows
    log = contend(make, folder, paths, 4, seconds * 2)
    start = min(i[0] for i in log)
    waits = sorted(t_in - t_req for t_req, t_in, _ in log if t_req - start > WARM_UP)
    mean, p99 = statistics.mean(waits), waits[int(len(waits) * 0.99)]
    burst = max(t_in - t_req for t_req, t_in, _ in log if t_req - start <= WARM_UP)
    overtaken, ahead = order(log)
    throughput = len(log) / (log[-1][2] - start)
    rows.append((f"{label}: contended throughput", throughput, "per second, 4 processes"))
    rows.append((f"{label}: worst wait / mean wait", waits[-1] / mean,
                 f"x (mean {1000 * mean:.2f} ms, p99 {1000 * p99:.2f} ms = {p99 / mean:.1f}x, "
                 f"worst {1000 * waits[-1]:.2f} ms; {overlaps(log)} overlaps)"))
    rows.append((f"{label}: start-up burst, worst wait / mean wait", burst / mean,
                 f"x (the first {1000 * WARM_UP:.0f} ms, 4 processes started at once)"))
    rows.append((f"{label}: order", overtaken, f"requests at most overtaken by a later one; the "
                 f"longest wait had {ahead} grants before it"))
    return rows


def run(seconds: float = 0.5) -> list[Row]:
    """Every row: (what, value, unit and notes)."""
    impls: list[tuple[str, Callable[..., Lock], bool]] = [
        ("novaproc", NovaLock, True),
        ("fcntl.flock", FlockLock, True),
        ("portalocker blocking", PortalockerBlocking, True),
        ("portalocker defaults", PortalockerDefaults, False),
    ]
    filelock_class = _filelock_class()
    if filelock_class is not None:
        impls.append(("filelock defaults", filelock_class, True))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-locks-") as tmp:
        folder = Path(tmp)
        shapes = {"1 path": [folder / "one"], "10 paths": [folder / f"set{i}" for i in range(10)]}
        for name, make, contended in impls:
            for shape, paths in shapes.items():
                rows += _bench(name, make, folder, shape, paths, seconds, contended)
    if filelock_class is None:
        rows.append(("filelock", float("nan"), "not installed: skipped"))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="length of each measurement")
    args = parser.parse_args(argv)
    rows = run(args.seconds)
    width = max(len(name) for name, _, _ in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>12,.3f}  {note}")


if __name__ == "__main__":
    main()
