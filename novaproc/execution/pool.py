"""The worker pool, the supervisor's side of running tasks (ninja's CommandRunner): hand a job
to an idle worker, wait for reports, stop a task's whole tree.

    supervisor (WorkerPool)                      worker i (worker.py)
      submit(Job) ────── Pipe ───────────▶  runs the task
      wait() ◀────────── Pipe ────────────  Started(pid) if it runs a while, Finished(code)
      wait() ◀── sentinel ── a dead worker fails the one task it held; it is replaced
      terminate(task) ── SIGTERM, then SIGKILL after grace ─▶ every descendant of the worker

A run's workers are forked at the supervisor's start (`prefork`), before any thread, lock file
or pipe exists: no interpreter to start and wait for. Later ones (a replacement
for a dead worker; a pool nobody forked for) come from a forkserver, since by then the
supervisor runs threads (the live view, the journal's flusher) and forking a threaded process is
unsafe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing
import multiprocessing.connection
import os
import select
import signal
import sys
import time
from dataclasses import dataclass

from novaproc.execution.proctree import (
    DEFAULT_GRACE,
    become_subreaper,
    kill_adopted,
    kill_marked,
    signal_tree,
)
from novaproc.execution.tasklog import rescue
from novaproc.execution.worker import worker_main
from novaproc.messages import Escalated, Finished, Job, Report

MAX_WAIT = 3600.0  # seconds: the longest single wait; waking once an hour costs nothing


def prefork(count: int) -> int:
    """Fork `count` workers now, for the next WorkerPool to take; how many were forked: none
    while this process runs another thread (a fork copies only the caller's, and a lock another
    held would stay held in the child for ever). Each worker closes every descriptor but its
    pipe and stdio: no lock, file or pipe of the supervisor's stays open in it."""
    import threading

    if threading.active_count() != 1:
        return 0
    ctx = multiprocessing.get_context("fork")
    for _ in range(count):
        parent, child = ctx.Pipe(duplex=True)
        process = ctx.Process(target=_forked_worker, args=(child,), daemon=True, name="novaproc-worker")
        process.start()
        child.close()
        assert process.pid is not None
        # its sentinel's other end closes with the descriptors it does not need: a pidfd
        _spares.append(_WorkerSlot(process, parent, pidfd=os.pidfd_open(process.pid), ours=True))
    return count


_spares: list[_WorkerSlot] = []  # the workers prefork made and no pool took yet: this process's own


def _forked_worker(conn: multiprocessing.connection.Connection) -> None:
    keep = conn.fileno()
    os.closerange(3, keep)  # close_range(2) on Linux: one call, however many are open
    os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
    null = os.open(os.devnull, os.O_RDONLY)  # the supervisor's input (a terminal, a pipe) is not ours
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 (stdin, for the worker's life)
    worker_main(conn)


def end_spares() -> None:
    """End the workers forked for a pool that never took them (a run with fewer tasks)."""
    while _spares:
        slot = _spares.pop()
        with contextlib.suppress(OSError):
            slot.conn.send(None)
        _end_worker(slot, 2)
        slot.close()


def start_forkserver() -> None:
    """Start the process workers fork from (idempotent); its interpreter starts while the
    caller goes on, rather than when a worker is first needed."""
    multiprocessing.get_context("forkserver").set_forkserver_preload(["novaproc.execution.worker", "ctypes"])
    from multiprocessing import forkserver

    forkserver.ensure_running()


# ---------------------------------------------------------------- supervisor side


@dataclass
class _WorkerSlot:
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    job: Job | None = None
    task_pid: int | None = None
    started_at: float = 0.0
    kill_at: float | None = None  # when SIGKILL follows a SIGTERM already sent
    escalated: bool = False  # that SIGKILL was sent, and reported
    pidfd: int | None = None  # watched instead of the sentinel once the forkserver is gone
    ours: bool = False  # forked here (prefork): its death is watched by a pidfd, its exit reaped here

    @property
    def death_fd(self) -> int:
        """Readable when the worker died. Its sentinel is a pipe from the forkserver, which
        reports the worker's exit: were the forkserver killed, the pipe's EOF would be no death."""
        return self.pidfd if self.pidfd is not None else self.process.sentinel

    def forkserver_lost(self) -> bool:
        """The sentinel said "died", but the worker lives: watch it through a pidfd from now on."""
        if self.pidfd is not None:
            return False
        try:
            fd = os.pidfd_open(self.process.pid)
        except OSError:
            return False  # gone altogether
        if select.select([fd], [], [], 0)[0]:
            os.close(fd)
            return False
        self.pidfd = fd
        return True

    @property
    def reaped_here(self) -> bool:
        """Its exit code can be had here: it is our child, or its forkserver still watches it."""
        return self.ours or self.pidfd is None

    def close(self) -> None:
        self.conn.close()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


class WorkerPool:
    """Runs jobs on up to `size` worker processes; the supervisor's CommandRunner.

    Non-blocking except for `wait`, which returns as soon as a worker reports, a worker
    dies, a wake-up fd is readable or the timeout passes.
    """

    def __init__(self, size: int, kill_grace: float = DEFAULT_GRACE, *, adopt_orphans: bool = False) -> None:
        """`adopt_orphans`: this process becomes a subreaper, so what a killed worker's task left
        running (even below setsid, without novaproc's marks) is reparented to it and ended; for a
        process that runs nothing else meanwhile, as a run's supervisor."""
        self.size, self.kill_grace, self.adopts_orphans = size, kill_grace, adopt_orphans
        self._subreaper = False  # made one after the first job is handed over: it costs ctypes' import
        self._ctx = multiprocessing.get_context("forkserver")
        if not _spares:  # else the run forked its workers; a replacement may wait for the forkserver
            start_forkserver()  # now, while the caller goes on: a worker needed later waits less
        self._slots: list[_WorkerSlot] = []
        self._token, self._jobs = f"{os.getpid()}-{os.urandom(4).hex()}", 0

    def idle(self) -> int:
        return self.size - sum(1 for s in self._slots if s.job is not None)

    def submit(self, job: Job) -> None:
        self._jobs += 1
        job = dataclasses.replace(job, env={**job.env, "NOVA_JOB": f"{self._token}.{self._jobs}"})
        while True:
            slot = next((s for s in self._slots if s.job is None), None) or self._spawn()
            try:
                slot.conn.send(job)
                break
            except OSError:  # died while idle (the OOM killer, say): it held no task; replace it
                self._slots.remove(slot)
                slot.close()
        slot.job, slot.task_pid, slot.started_at, slot.kill_at = job, None, time.time(), None
        slot.escalated = False
        if self.adopts_orphans and not self._subreaper:  # in time: orphans appear when a worker dies
            become_subreaper()
            self._subreaper = True

    def _spawn(self) -> _WorkerSlot:
        if len(self._slots) >= self.size:
            raise RuntimeError("no idle worker: the caller must check idle() first")
        if _spares:
            slot = _spares.pop(0)
        else:
            parent, child = self._ctx.Pipe(duplex=True)
            process = self._ctx.Process(target=worker_main, args=(child,), daemon=True,
                                        name="novaproc-worker")
            process.start()
            child.close()
            slot = _WorkerSlot(process, parent)
        self._slots.append(slot)
        return slot

    def wait(self, timeout: float | None, wake: list[int] | None = None) -> list[Report]:
        """Reports from workers, waiting up to `timeout` seconds for the first one."""
        timeout = self._until_next_kill(timeout)
        busy = [s for s in self._slots if s.job is not None]
        poller = select.poll()  # as multiprocessing.connection.wait, in fewer steps: it runs per task
        for fd in [*(s.conn.fileno() for s in busy), *(s.death_fd for s in busy), *(wake or ())]:
            poller.register(fd, select.POLLIN)
        # poll takes at most 2**31-1 ms (24.8 days): a longer wait (timeout = "600h") wakes early
        wait_ms = None if timeout is None else math.ceil(min(timeout, MAX_WAIT) * 1000)
        ready = {fd for fd, _ in poller.poll(wait_ms)}
        reports: list[Report] = []
        for slot in busy:
            if slot.conn.fileno() in ready:
                reports.extend(self._drain(slot))
            if slot.job is not None and slot.death_fd in ready and not slot.forkserver_lost():
                reports.append(self._worker_died(slot))
        reports.extend(self._escalate())
        return reports

    def _drain(self, slot: _WorkerSlot) -> list[Report]:
        """What a readable worker sent: a Finished ends it (the worker says nothing more)."""
        reports: list[Report] = []
        try:
            while True:
                report = slot.conn.recv()
                reports.append(report)
                if isinstance(report, Finished):
                    slot.job = None
                    break
                slot.task_pid, slot.started_at = report.pid, report.started_at
                if not slot.conn.poll():
                    break
        except (EOFError, OSError):
            pass  # the sentinel reports the death
        return reports

    def _worker_died(self, slot: _WorkerSlot) -> Finished:
        job = slot.job
        assert job is not None
        slot.process.join(0.1)
        code = slot.process.exitcode if slot.reaped_here else None  # else nobody reaped it for us
        how = f"signal {signal.Signals(-code).name}" if code and code < 0 else \
            f"exit code {code}" if code is not None else "its exit status is unknown"
        # its task lost its guardian: its processes now hang below init, found by their mark
        kill_marked("NOVA_JOB", job.env["NOVA_JOB"])
        if self.adopts_orphans:  # and those that dropped their marks came to us
            kill_adopted(keep=self._worker_pids(but=slot))
        rescue(job.log_path, slot.process.pid)  # what it printed, from the worker's scratch file
        self._slots.remove(slot)
        slot.close()
        return Finished(job.task_id, job.attempt, None, -code if code and code < 0 else None,
                        error=f"its worker process died ({how})", started_at=slot.started_at,
                        ended_at=time.time())

    def terminate(self, task_id: str, *, kill: bool = False) -> None:
        """Stop a task: SIGTERM its whole tree now, SIGKILL after the grace period."""
        now = time.monotonic()
        for slot in self._slots:
            if slot.job is not None and slot.job.task_id == task_id:
                self._signal_tree(slot, signal.SIGKILL if kill else signal.SIGTERM)
                slot.escalated |= kill  # asked for outright: nothing to report
                if slot.kill_at is None:
                    slot.kill_at = now + (0.0 if kill else self.kill_grace)

    def _signal_tree(self, slot: _WorkerSlot, sig: int) -> None:
        signal_tree(slot.process.pid, slot.task_pid, sig)

    def _until_next_kill(self, timeout: float | None) -> float | None:
        busy = [s for s in self._slots if s.job is not None]
        return until_due(timeout, [s.kill_at for s in busy if s.kill_at is not None])

    def _escalate(self) -> list[Escalated]:
        """SIGKILL the tasks that outlived their grace period; say so, once per task."""
        now, said = time.monotonic(), []
        for slot in self._slots:
            if slot.job is not None and slot.kill_at is not None and now >= slot.kill_at:
                self._signal_tree(slot, signal.SIGKILL)
                if not slot.escalated:
                    slot.escalated = True
                    said.append(Escalated(slot.job.task_id, slot.job.attempt, self.kill_grace))
                slot.kill_at = now + 1.0  # repeat while anything survives
        return said

    def busy(self) -> list[str]:
        """The tasks the workers hold now."""
        return [s.job.task_id for s in self._slots if s.job is not None]

    def shutdown(self) -> None:
        """Stop every worker (and so every task); safe to call more than once. A worker told to
        stop mid-task, even one that is only now starting the job it was handed, ends its
        task's tree before it exits: it is waited for up to the kill grace, not killed first."""
        for slot in self._slots:
            if slot.job is not None:
                self._signal_tree(slot, signal.SIGKILL)
            with contextlib.suppress(OSError):
                slot.conn.send(None)
        for slot in self._slots:
            _end_worker(slot, 2 + (self.kill_grace if slot.job is not None else 0))
            slot.close()
        self._slots.clear()
        end_spares()
        if self.adopts_orphans:
            kill_adopted()

    def _worker_pids(self, but: _WorkerSlot) -> set[int]:
        """The pids of our workers but one: forked ones are our children, as adopted orphans are."""
        return {s.process.pid for s in self._slots if s is not but and s.process.pid is not None} | \
            {s.process.pid for s in _spares if s.process.pid is not None}


def until_due(timeout: float | None, due: list[float]) -> float | None:
    """`timeout`, shortened to the first of the `due` times (time.monotonic) that comes sooner."""
    if not due:
        return timeout
    left = max(0.0, min(due) - time.monotonic())
    return left if timeout is None else min(timeout, left)


def _end_worker(slot: _WorkerSlot, timeout: float) -> None:
    """Wait up to `timeout` for a worker told to stop, then kill it."""
    if slot.pidfd is None:  # the forkserver's child: its sentinel says when it ends
        slot.process.join(timeout)
        if slot.process.is_alive():
            slot.process.kill()
            slot.process.join(1)
        return
    if _wait_or_kill(slot.pidfd, timeout) and slot.ours:
        slot.process.join()  # our child, gone: reap it


def _wait_or_kill(pidfd: int, timeout: float) -> bool:
    """Wait up to `timeout` for the process of `pidfd` to end, then SIGKILL it and wait a
    second more; whether it ended. (A forked worker's multiprocessing sentinel is of no use:
    the worker closed its other end at its start, so `join(timeout)` would wait without end
    for one that does not stop.)"""
    if select.select([pidfd], [], [], timeout)[0]:
        return True
    with contextlib.suppress(ProcessLookupError):
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    return bool(select.select([pidfd], [], [], 1)[0])
