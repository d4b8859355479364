"""Benchmark novaproc's locks beside raw fcntl.flock, portalocker and filelock (when installed).

For one path and for a 10-path lock set: uncontended acquire+release per second; hand-off
latency (a holder's release to the next waiter holding it; 2 processes); and, with 4 processes
that re-request at once, throughput and the worst wait against the mean wait. Every contended
run also checks its own log: two critical sections that overlapped would be counted.

    parent --fork--> N workers: wait at a barrier, loop {t_req; acquire; t_in; hold; t_out;
                     release} until the deadline, send the (t_req, t_in, t_out) log back

    python scripts/bench_locks.py [--seconds S]
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import portalocker

from novaproc.locks import LockManager, LockRequest

HOLD = 0.0001  # seconds of work inside each critical section
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


def handoffs(log: list[Interval]) -> list[float]:
    """Seconds from a holder's release to the next holder's entry, when that one was waiting."""
    return [b[1] - a[2] for a, b in itertools.pairwise(log) if b[0] < a[2]]


def overlaps(log: list[Interval]) -> int:
    return sum(1 for a, b in itertools.pairwise(log) if b[1] < a[2])


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
    pair = handoffs(contend(make, folder, paths, 2, seconds * 2))
    if pair:
        rows.append((f"{label}: hand-off", 1000 * statistics.mean(pair),
                     f"ms mean, median {1000 * statistics.median(pair):.3f}, 2 processes"))
    if not contended:
        return rows
    log = contend(make, folder, paths, 4, seconds * 2)
    waits = [t_in - t_req for t_req, t_in, _ in log]
    span = log[-1][2] - min(i[0] for i in log)
    rows.append((f"{label}: contended throughput", len(log) / span, "per second, 4 processes"))
    rows.append((f"{label}: worst wait / mean wait", max(waits) / statistics.mean(waits),
                 f"x (mean {1000 * statistics.mean(waits):.2f} ms, worst {1000 * max(waits):.2f} ms, "
                 f"{overlaps(log)} overlaps)"))
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
