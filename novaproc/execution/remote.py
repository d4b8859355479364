"""A task on a Dask worker, the far side of `dask.py`: its checkout made (by the isolation's
`place`, handed over with the job), the task run below a novaproc worker process of its own, its
output sent back as it comes, its result collected.

    Dask worker thread (run_remote)                 host (worker.py's worker_main, kept warm)
      place(parcel): a worktree at the start commit
      Job (cwd in that worktree) ──── socket ────▶  the task: own session, a subreaper above it
      ◀──────────────────────── Started, Finished ─┘
      the log's new bytes ── log_event(topic) ──▶ the supervisor's log of the task
      its Dask task cancelled, or the scheduler gone (the supervisor died): the socket closes,
      and the host ends the task's whole tree (SIGTERM, SIGKILL after kill_grace)

Dask cannot stop a running task (`Future.cancel` leaves the thread and its subprocess running);
the host process is what gives the cluster novaproc's process control.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import multiprocessing.connection
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from novaproc.errors import ObjectsMissing
from novaproc.execution.proctree import signal_tree
from novaproc.execution.tasklog import rescue
from novaproc.execution.throttle import Throttle
from novaproc.messages import Delivery, Finished, Job, Parcel, Started

TICK = 0.1  # seconds between looks at the log and at the task's standing
CHUNK = 256 * 1024  # the most output one event carries

Place = Callable[[Parcel, str], AbstractContextManager[Any]]
_running: dict[str, tuple[int, int | None]] = {}  # Dask key -> (host pid, task pid): for signals
_hosts = threading.local()
_throttles: dict[tuple[float, float], Throttle] = {}


def run_remote(job: Job, parcel: Parcel, place: Place, topic: str, include: bytes | None = None) -> Delivery:
    """Run `job` here, in a checkout made from `parcel`; never raises (a Finished says why)."""
    from distributed import get_worker

    worker = get_worker()
    key = str(worker.get_current_task())
    tag = hashlib.sha256(key.encode()).hexdigest()[:12]
    try:
        with place(dataclasses.replace(parcel, include=include), tag) as spot:
            spot.furnish()
            cwd = spot.folder / os.path.relpath(job.cwd, job.folder)
            here = dataclasses.replace(job, cwd=str(cwd), log_path=str(spot.log), folder=str(spot.folder))
            attempt = _Attempt(here, worker, key, topic)
            finished = attempt.run(parcel.limits)
            commit, bundle = _collected(spot, finished)
            return Delivery(finished, commit, bundle, output=attempt.rest(), output_at=attempt.sent)
    except ObjectsMissing:
        return Delivery(Finished(job.task_id, job.attempt, None), missing=True)
    except Exception as e:  # every way to fail is an answer: the supervisor decides what follows
        return Delivery(Finished(job.task_id, job.attempt, None, error=f"on {worker.address}: {e}",
                                 ended_at=time.time()))


def _collected(spot: Any, finished: Finished) -> tuple[str | None, bytes | None]:
    """The attempt's changes as a commit and a bundle: its result, or (failed) what it left, for
    the worktree kept for inspection; a failed attempt's that cannot be had are no loss."""
    try:
        return spot.collect()  # type: ignore[no-any-return]
    except Exception:
        if finished.ok:
            raise
        return None, None


def signal_remote(key: str, sig: int) -> bool:
    """Send `sig` to the whole tree of the task run under Dask key `key` on this worker (run by
    `Client.run`); whether it runs here."""
    pids = _running.get(key)
    if pids is not None:
        signal_tree(pids[0], pids[1], sig)
    return pids is not None


def serve(fd: int) -> None:
    """A host process's life: worker_main on the socket `fd`."""
    from novaproc.execution.worker import worker_main

    worker_main(multiprocessing.connection.Connection(fd))


class _Attempt:
    """One job on this thread's host, its log streamed, its standing watched."""

    def __init__(self, job: Job, worker: Any, key: str, topic: str) -> None:
        self.job, self.worker, self.key, self.topic = job, worker, key, topic
        self.sent = 0

    def run(self, limits: tuple[float, float]) -> Finished:
        if not self._room(limits):
            return Finished(self.job.task_id, self.job.attempt, None, error="cancelled", ended_at=time.time())
        host = _host()
        _running[self.key] = (host.pid, None)
        try:
            host.conn.send(self.job)
            self._say("started", pid=host.pid)
            return self._watch(host)
        finally:
            _running.pop(self.key, None)

    def _watch(self, host: _Host) -> Finished:
        while True:
            try:
                if host.conn.poll(TICK):
                    report = host.conn.recv()
                    if isinstance(report, Finished):
                        return report
                    if isinstance(report, Started):
                        _running[self.key] = (host.pid, report.pid)
                        self._say("started", pid=report.pid, task=True)
            except (EOFError, OSError):
                _hosts.host = None
                rescue(self.job.log_path, host.pid)  # what it printed before it ran 0.1 s
                return Finished(self.job.task_id, self.job.attempt, None,
                                error=f"its process on {self.worker.address} died", ended_at=time.time())
            self._stream()
            if self._abandoned():
                host.end(self.job.kill_grace)  # the socket closes: the host ends the tree, then itself
                _hosts.host = None
                return Finished(self.job.task_id, self.job.attempt, None, error="cancelled",
                                ended_at=time.time())

    def _room(self, limits: tuple[float, float]) -> bool:
        """Wait while this machine's load is over the run's limits (one task of this worker may
        always run); False if the task was abandoned meanwhile."""
        throttle = _throttle(*limits)
        while not throttle.allows_start(len(_running)):
            if self._abandoned():
                return False
            time.sleep(TICK)
        return True

    def _abandoned(self) -> bool:
        """Cancelled by the supervisor, or the supervisor is gone (Dask then cancels its tasks)."""
        task = self.worker.state.tasks.get(self.key)
        if task is None or task.state not in ("executing", "long-running"):
            return True
        comm = getattr(self.worker.batched_stream, "comm", None)
        return comm is None or comm.closed()

    def _stream(self) -> None:
        """Send what the task wrote since the last look."""
        while data := self.rest(CHUNK):
            self._say("output", offset=self.sent, data=data)
            self.sent += len(data)

    def rest(self, most: int = -1) -> bytes:
        """What the task wrote that was not sent yet (up to `most` bytes): the end goes back with
        the result."""
        try:
            with open(self.job.log_path, "rb") as log:
                log.seek(self.sent)
                return log.read(most)
        except FileNotFoundError:
            return b""

    def _say(self, kind: str, **values: Any) -> None:
        self.worker.log_event(self.topic, {"key": self.key, "kind": kind, "at": time.time(), **values})


class _Host:
    """A novaproc worker process serving this thread's jobs, over a socket pair."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from novaproc.execution.remote import serve; "
             "serve(int(sys.argv[1]))", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        theirs.close()
        self.pid = self.process.pid
        self.conn = multiprocessing.connection.Connection(ours.detach())

    def end(self, grace: float) -> None:
        self.conn.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(grace + 2)


def _throttle(cpu_limit: float, memory_limit: float) -> Throttle:
    """This worker's load gate (its readings are the machine's), kept from task to task."""
    throttle = _throttles.get((cpu_limit, memory_limit))
    if throttle is None:
        throttle = _throttles[(cpu_limit, memory_limit)] = Throttle(cpu_limit, memory_limit)
    return throttle


def _host() -> _Host:
    host = getattr(_hosts, "host", None)
    if host is None or host.process.poll() is not None:
        host = _hosts.host = _Host()
    return host


