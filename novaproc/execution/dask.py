"""The Dask executor: the supervisor's jobs run on a Dask distributed cluster, behind the same
Executor interface as the local pool (distributed's home). The supervisor stays the only
scheduler and the only lock authority; Dask only decides where a task runs and carries bytes.

    supervisor (DaskExecutor)                          a Dask worker (remote.py)
      submit: pack the start commit (a bundle) ── client.submit(run_remote, key per attempt) ──▶
      wait ◀── log_event: started, output (written into the task's log as it comes) ──────────┘
      wait ◀── the future: a Delivery (how it ended, the result as a bundle), unpacked here
      terminate ── Client.run(signal_remote) on the worker that runs it ──▶ the task's tree

Jobs for this machine (`Job.remote` false: pinned, or naming absolute paths) go to the local pool.
Dask's traps, and the answers: a cancelled future keeps running (the worker watches its task's
state and ends the tree itself); a dead worker's task is re-run elsewhere (allowed-failures 0
where novaproc starts the cluster; elsewhere a second start of one attempt fails that attempt);
results belong to one attempt (a key per attempt, `pure=False`); no Dask lock is used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from novaproc.errors import EnvironmentFault, NovaError
from novaproc.execution.pool import WorkerPool, until_due
from novaproc.execution.remote import Place, run_remote, signal_remote
from novaproc.fsio import open_private
from novaproc.messages import Delivery, Escalated, Finished, Job, Parcel, Report, Started

CONNECT_TIMEOUT = 10.0  # seconds to reach a scheduler before the run gives up, having run nothing
TIDY_WAIT = 10.0  # seconds the run's end waits for the workers to remove their worktrees


class Shipping(Protocol):
    """How a task's checkout reaches a worker and its result comes back (isolation's Shipper):
    `place` makes the checkout on the worker, `tidy` removes what a worker process kept."""

    place: Place
    tidy: Callable[[], None]

    def pack(self, job: Job, *, complete: bool = False) -> Parcel: ...
    def unpack(self, job: Job, parcel: Parcel, delivery: Delivery, *, failed: bool = False) -> None: ...
    def included(self) -> bytes | None: ...


@dataclass
class _Attempt:
    job: Job
    parcel: Parcel
    future: Any
    log_base: int  # where the attempt's output starts in the task's log
    worker: str | None = None  # the address of the worker running it, once it said so
    pending: int = 0  # a signal for it once it starts
    kill_at: float | None = None
    escalated: bool = False
    ended: bool = False
    resent: bool = False  # sent again with a complete bundle


class DaskExecutor:
    """Runs remote jobs on a Dask cluster and the others on `local`; one Finished per job."""

    def __init__(self, scheduler: str, local: WorkerPool, shipping: Shipping, kill_grace: float) -> None:
        self.local, self.shipping, self.kill_grace = local, shipping, kill_grace
        self.client, self._cluster = connect(scheduler)
        self.topic = f"novaproc-{os.getpid()}-{os.urandom(4).hex()}"
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._attempts: dict[str, _Attempt] = {}  # by Dask key
        self._logs: dict[str, tuple[str, int]] = {}  # Dask key -> its log, where its output starts
        self._ready: list[Report] = []
        self._include: Any = None  # worktree_include's files, scattered once
        self.client.subscribe_topic(self.topic, lambda event: self._post("event", event[1]))

    # -- submitting -----------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        if not job.remote:
            self.local.submit(job)
            return
        try:
            parcel = self.shipping.pack(job)
        except NovaError as e:
            self._ready.append(_failed(job, str(e)))
            return
        self._send(job, parcel, _log_start(job))

    def _send(self, job: Job, parcel: Parcel, log_base: int, resent: bool = False) -> None:
        if self._include is None and (tar := self.shipping.included()) is not None:
            self._include = self.client.scatter(tar, hash=False)
        key = f"novaproc-{re.sub(r'[^A-Za-z0-9_.-]', '_', job.task_id)}-{job.attempt}-{os.urandom(4).hex()}"
        future = self.client.submit(run_remote, job, parcel, self.shipping.place, self.topic, self._include,
                                    key=key, pure=False, retries=0)
        self._attempts[key] = _Attempt(job, parcel, future, log_base, resent=resent)
        self._logs[key] = (job.log_path, log_base)
        future.add_done_callback(lambda f: self._post("done", f.key))

    def _post(self, kind: str, value: Any) -> None:
        """From Dask's thread: into the inbox, and wake `wait`."""
        self._inbox.put((kind, value))
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    # -- waiting --------------------------------------------------------------------------------

    def wait(self, timeout: float | None, wake: Sequence[int] = ()) -> list[Report]:
        if self._ready or not self._inbox.empty():
            timeout = 0.0
        timeout = self._until_next_kill(timeout)
        reports = self.local.wait(timeout, wake=[*wake, self._wake_r])
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 65536)
        while True:
            try:
                kind, value = self._inbox.get_nowait()
            except queue.Empty:
                break
            self._heard(value) if kind == "event" else self._done(value)
        reports += self._ready + self._escalate()
        self._ready = []
        return reports

    def _heard(self, message: dict[str, Any]) -> None:
        key = message.get("key", "")
        if message["kind"] == "output" and key in self._logs:  # it may come after the end
            path, base = self._logs[key]
            _write_at(path, base + message["offset"], message["data"])
        attempt = self._attempts.get(key)
        if attempt is not None and message["kind"] == "started" and not attempt.ended:
            if attempt.worker is not None and attempt.worker != message.get("worker"):
                # Dask re-ran it after its worker died: the first run's result must not land
                self._end(attempt, _failed(attempt.job, f"its Dask worker {attempt.worker} died"))
                attempt.future.cancel()
                return
            attempt.worker = message.get("worker")
            if attempt.pending:  # stopped before it started
                self._signal(attempt, attempt.pending)
            if message.get("task"):  # not only its host: the task's own process
                self._ready.append(Started(attempt.job.task_id, attempt.job.attempt, message["pid"],
                                           message["at"]))

    def _done(self, key: str) -> None:
        attempt = self._attempts.pop(key, None)
        if attempt is None or attempt.ended:
            return
        job, future = attempt.job, attempt.future
        if future.status != "finished":
            why = _failure(future, attempt.worker)
            self._end(attempt, _failed(job, why))
            return
        delivery: Delivery = future.result()
        if delivery.missing and not attempt.resent:  # a worker new to this repository
            try:
                parcel = self.shipping.pack(job, complete=True)
            except NovaError as e:
                self._end(attempt, _failed(job, str(e)))
                return
            self._send(job, parcel, attempt.log_base, resent=True)
            return
        finished = delivery.finished
        if delivery.output:
            _write_at(job.log_path, attempt.log_base + delivery.output_at, delivery.output)
        if delivery.missing:
            finished = _failed(job, "its worker cannot hold its start commit")
        elif finished.ok:
            try:
                self.shipping.unpack(job, attempt.parcel, delivery)
            except NovaError as e:
                finished = _failed(job, f"its result cannot be brought back: {e}")
        elif delivery.commit is not None:  # what it left, into the worktree kept for inspection
            with contextlib.suppress(NovaError):
                self.shipping.unpack(job, attempt.parcel, delivery, failed=True)
        self._end(attempt, finished)

    def _end(self, attempt: _Attempt, finished: Finished) -> None:
        attempt.ended = True
        self._ready.append(finished)

    # -- stopping -------------------------------------------------------------------------------

    def terminate(self, task_id: str, *, kill: bool = False) -> None:
        if task_id in self.local.busy():
            self.local.terminate(task_id, kill=kill)
            return
        for attempt in self._live():
            if attempt.job.task_id == task_id:
                self._signal(attempt, signal.SIGKILL if kill else signal.SIGTERM)
                attempt.escalated |= kill
                if attempt.kill_at is None:
                    attempt.kill_at = time.monotonic() + (0.0 if kill else self.kill_grace)

    def _signal(self, attempt: _Attempt, sig: int) -> None:
        """Signal the attempt's tree on its worker. One that has not started yet gets the signal
        when it does, or, for a SIGKILL, is cancelled before it can."""
        if attempt.worker is not None:
            self._on_workers(signal_remote, attempt.future.key, sig, workers=[attempt.worker])
        elif sig == signal.SIGKILL:
            attempt.future.cancel()
            self._end(attempt, Finished(attempt.job.task_id, attempt.job.attempt, None, sig,
                                        ended_at=time.time()))
        else:
            attempt.pending = sig

    def _on_workers(self, function: Callable[..., Any], *args: Any, workers: list[str] | None = None,
                    wait: float = 0.0) -> None:
        """Run `function` in the worker processes (all, or `workers`) without blocking the loop
        on a hung or vanished one (Client.run has no timeout): waits at most `wait` seconds."""
        def call() -> None:
            with contextlib.suppress(Exception):  # a worker gone meanwhile: its death is the answer
                self.client.run(function, *args, workers=workers)

        thread = threading.Thread(target=call, name="novaproc-dask-run", daemon=True)
        thread.start()
        thread.join(wait)

    def _until_next_kill(self, timeout: float | None) -> float | None:
        return until_due(timeout, [a.kill_at for a in self._live() if a.kill_at is not None])

    def _escalate(self) -> list[Escalated]:
        now, said = time.monotonic(), []
        for attempt in self._live():
            if attempt.kill_at is not None and now >= attempt.kill_at:
                self._signal(attempt, signal.SIGKILL)
                if not attempt.escalated:
                    attempt.escalated = True
                    said.append(Escalated(attempt.job.task_id, attempt.job.attempt, self.kill_grace))
                attempt.kill_at = now + 1.0
        return said

    def _live(self) -> list[_Attempt]:
        return [a for a in self._attempts.values() if not a.ended]

    def busy(self) -> list[str]:
        return [*self.local.busy(), *(a.job.task_id for a in self._live())]

    def shutdown(self) -> None:
        """Every task ended, here and on the cluster; the connection (and a local cluster) closed."""
        for attempt in self._live():
            self._signal(attempt, signal.SIGKILL)
            attempt.future.cancel()
        self._attempts.clear()
        self.local.shutdown()
        self._on_workers(self.shipping.tidy, wait=TIDY_WAIT)  # the worktrees kept for this run's tasks
        with contextlib.suppress(Exception):
            self.client.close()
            if self._cluster is not None:
                self._cluster.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1


def connect(scheduler: str) -> tuple[Any, Any]:
    """A client of the scheduler at `scheduler` (and the cluster, for "local:N"); EnvironmentFault
    naming the address when it cannot be reached."""
    import dask

    # novaproc's retries decide about a dead worker's task; Dask must not re-run it silently.
    # A worker's task starts a process of its own (the host): Dask's daemonic workers cannot.
    dask.config.set({"distributed.scheduler.allowed-failures": 0, "distributed.worker.daemon": False})
    from distributed import Client

    logging.getLogger("distributed").setLevel(logging.CRITICAL)  # nothing below the CLI prints
    if scheduler.startswith("local:"):
        cluster = local_cluster(int(scheduler.partition(":")[2]))
        return Client(cluster), cluster
    try:
        return Client(scheduler, timeout=CONNECT_TIMEOUT), None
    except (OSError, TimeoutError) as e:
        raise EnvironmentFault(f"cannot reach the Dask scheduler at {scheduler} ({e}); start one "
                               "(`dask scheduler`), or set scheduler / NOVA_SCHEDULER to its address"
                               ) from None


def local_cluster(workers: int) -> Any:
    """A cluster of `workers` single-threaded worker processes on this machine, every port on
    127.0.0.1 and chosen by the system (its web server's too: a fixed one clashes), no dashboard."""
    from distributed import LocalCluster

    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                        dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                        silence_logs=logging.CRITICAL)


def _failed(job: Job, error: str) -> Finished:
    return Finished(job.task_id, job.attempt, None, error=error, ended_at=time.time())


def _failure(future: Any, worker: str | None) -> str:
    if future.status == "cancelled":
        return "cancelled on the cluster"
    error = future.exception()
    if type(error).__name__ == "KilledWorker":
        return f"its Dask worker{' ' + worker if worker else ''} died"
    return f"the cluster could not run it: {type(error).__name__}: {error}"


def _log_start(job: Job) -> int:
    """Where this attempt's output begins in the task's log, headed as the local pool heads it."""
    fd = open_private(job.log_path)
    try:
        if os.fstat(fd).st_size:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            os.write(fd, f"\n=== novaproc: attempt {job.attempt} of {job.task_id}, {stamp} ===\n".encode())
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def _write_at(path: str, offset: int, data: bytes) -> None:
    fd = open_private(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


