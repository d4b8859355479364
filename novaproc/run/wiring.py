"""A run put together: its journal, the supervisor and the pieces it drives, wired so that
every event reaches the journal first and the views after.

The CLI starts a run here and consumes its outcome; resume and background runs come in
through the same door.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from novaproc.errors import BusyError, EnvironmentFault, ExitCode, NovaError, UsageError
from novaproc.execution.proctree import kill_marked
from novaproc.execution.signals import STOP_SIGNALS, Interrupts
from novaproc.execution.throttle import Throttle
from novaproc.fsio import open_private
from novaproc.inputs.settings import Settings
from novaproc.inputs.taskfile import TaskFile
from novaproc.isolation.interface import InPlace, Isolation
from novaproc.locking.gate import LockGate
from novaproc.locking.manager import Blocked, LockManager, Owner, run_request
from novaproc.messages import Event, Level, Message, Payload, RunFinished, RunState, TaskState
from novaproc.planning.plan import Plan
from novaproc.run.cluster import make_executor
from novaproc.run.outcome import RunOutcome
from novaproc.run.parts import Earlier, RunParts
from novaproc.run.supervisor import Supervisor
from novaproc.state.format import RunMeta, TaskMeta
from novaproc.state.history import save_durations
from novaproc.state.journal import Journal

if TYPE_CHECKING:  # a run in place never loads the git adapter, a new run no journal reader
    from novaproc.isolation.preflight import Preflight
    from novaproc.state.reader import RunRecord


class _SignalWhileWaiting(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum


class Run:
    """One run from start to outcome. Create with `start_run`; `close` always."""

    def __init__(self, taskfile: TaskFile, settings: Settings, plan: Plan, checked: Preflight | None,
                 journal: Journal, kept: Mapping[str, tuple[str | None, float]] | None = None,
                 earlier_attempts: Mapping[str, int] | None = None) -> None:
        self.taskfile, self.settings, self.plan, self.journal = taskfile, settings, plan, journal
        self.checked = checked
        self.kept = dict(kept or {})
        self.earlier_attempts = dict(earlier_attempts or {})
        self.resumed = kept is not None
        self.run_id = journal.run_id
        self._consumers: list[Callable[[Event], None]] = []
        # the forkserver starts before any view thread exists: forking a threaded process is unsafe
        try:
            self.executor, self.pool = make_executor(taskfile, settings, plan, checked, self.run_id)
        except NovaError:  # a scheduler out of reach: nothing ran, and a new run leaves nothing
            journal.close()
            if not self.resumed:
                shutil.rmtree(journal.folder, ignore_errors=True)
            raise
        self.locks = LockManager(owner=Owner(run_id=self.run_id, label=f"novaproc run {taskfile.path}"))
        self._file_lock = run_request(str(taskfile.path), self.run_id)

    def try_hold_tasks_file(self, if_busy: str) -> str | None:
        """One live run per tasks file: take the file's run lock now and return None, or say
        who holds it. With `if_busy` "skip", a busy file ends the run here (BusyError, exit 75)
        and leaves no run behind."""
        answer = self.locks.try_acquire(self._file_lock)
        if not isinstance(answer, Blocked):
            return None
        if if_busy == "skip":
            self.locks.cancel(self._file_lock)
            self.close()
            shutil.rmtree(self.journal.folder, ignore_errors=True)  # nothing ran: no run to list
            raise BusyError(f"{self.taskfile.path} is busy: another run of it is live "
                            f"({_holders(answer)}); --if-busy skip")
        return _holders(answer)

    def wait_for_tasks_file(self, holder: str) -> ExitCode | None:
        """Wait for the other run of this file; a SIGINT, SIGTERM or SIGHUP meanwhile cancels this run
        (recorded as such, its exit code returned) before anything ran."""
        self._report(Message(Level.WARNING, f"waiting for the other run of this file: {holder}"))

        def stop(signum: int, frame: object) -> None:
            raise _SignalWhileWaiting(signum)

        old = {s: signal.signal(s, stop) for s in STOP_SIGNALS}
        try:
            self.locks.acquire(self._file_lock)
            return None
        except _SignalWhileWaiting as e:
            self.locks.cancel(self._file_lock)
            code = ExitCode(128 + e.signum)  # 129 / 130 / 143
            self._report(RunFinished(int(code), str(RunState.CANCELLED), 0.0, 0.0))
            return code
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)

    def log_path(self, task_id: str) -> Path:
        return self.journal.log_path(task_id)

    def emit_to(self, consumer: Callable[[Event], None]) -> None:
        self._consumers.append(consumer)

    def _report(self, payload: Payload) -> None:
        self._emit([Event(self.run_id, time.time(), payload)])

    def _emit(self, events: Sequence[Event]) -> None:
        self.journal.record_all(events)  # durable first: a view that fails must not lose the record
        for event in events:
            for consume in list(self._consumers):
                try:
                    consume(event)
                except BrokenPipeError:  # `novaproc run ... | head`: the run goes on, unseen
                    self._consumers.remove(consume)

    def execute(self) -> RunOutcome:
        interrupts, stopping = Interrupts(), threading.Event()
        isolation: Isolation = InPlace(self.taskfile.root)
        if self.checked is not None:
            from novaproc.isolation.worktree_isolation import WorktreeIsolation

            # a Ctrl-C also ends a worktree_setup or verify under way; fail_fast, a setup
            isolation = WorktreeIsolation(self.checked, self.settings, self.run_id,
                                          self.journal.folder, resumed=self.resumed,
                                          stop=lambda: interrupts.first is not None or stopping.is_set())
        gate = LockGate(self.locks, self.taskfile.root, self.run_id, self.settings.resources)
        # on a cluster, the load that matters is each worker machine's: its tasks wait there
        throttle = Throttle(100, 100) if self.settings.executor == "dask" else None
        parts = RunParts(self.run_id, self.executor, isolation, self._emit, self.journal.log_path,
                         gate=gate, throttle=throttle, interrupts=interrupts, stopping=stopping)
        supervisor = Supervisor(self.plan, self.settings, parts, Earlier(self.kept, self.earlier_attempts))
        outcome = supervisor.run()
        try:
            save_durations(self.journal.state_dir, self.taskfile.path,
                           {tid: r.run_time for tid, r in outcome.records.items()
                            if r.state == TaskState.DONE and r.attempts}, self.taskfile.hashes)
        except OSError as e:  # only estimates are lost: the run's outcome stands
            self.journal.note(Level.WARNING, f"cannot keep the durations of this run: {e.strerror or e}")
        return outcome

    def detach(self, ready_fd: int) -> None:
        """A background run's supervisor: output to the run's folder, then tell the launcher
        the run id (closing the pipe it waits on)."""
        log = open_private(self.journal.folder / "supervisor.log")
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.write(ready_fd, self.run_id.encode())
        os.close(ready_fd)

    def close(self) -> None:
        self.executor.shutdown()
        self.locks.close()
        self.journal.close()


def start_run(taskfile: TaskFile, settings: Settings, plan: Plan, checked: Preflight | None, *,
              argv: list[str]) -> Run:
    meta = RunMeta(tasks_file=str(taskfile.path), root=str(taskfile.root), argv=tuple(argv),
                   description=_description(plan), tasks=_task_metas(plan, taskfile.hashes))
    journal = Journal.create(settings.state_path(taskfile.root), meta)
    return Run(taskfile, settings, plan, checked, journal)


def finish_interrupted_landing(record: RunRecord) -> str | None:
    """A resume's first step when its run was killed while it landed: finish that landing (so
    the repository is checked afterwards, as it is); what was done, in a sentence."""
    if record.landing is None:
        return None
    from novaproc.isolation.landing import finish_landing
    from novaproc.isolation.repo import Repo

    return finish_landing(Repo(record.meta.root), record.landing)


def resume_run(record: RunRecord, taskfile: TaskFile, settings: Settings, plan: Plan,
               checked: Preflight | None, finished: str | None = None) -> Run:
    """Continue `record`'s run (`plan`: its tasks as the file holds them now): tasks that
    succeeded with an unchanged definition (and whose dependencies are kept too) keep their
    results, unless the commit of a result is gone; the rest run."""
    from novaproc.state.reader import kept_results

    if record.status in (RunState.RUNNING, RunState.DONE):
        raise UsageError(f"run {record.id} is {record.status}: there is nothing to resume")
    commits = [t.commit for t in record.tasks if t.commit]
    lost = checked.repo.missing(commits) if checked is not None else set()  # `clean --all`, then gc
    kept = kept_results(record, taskfile.hashes, {t.id: t.depends_on for t in plan.tasks}, lost)
    kill_marked("NOVA_RUN_ID", record.id)  # anything a crashed supervisor's tasks left running
    journal = Journal.reopen(record.folder, record.meta, record.status,
                             tasks=_task_metas(plan, taskfile.hashes))
    if finished:
        journal.note(Level.INFO, finished)
    return Run(taskfile, settings, plan, checked, journal,
               {tid: (t.commit, t.duration or 0.0) for tid, t in kept.items()},
               {t.id: t.attempts for t in record.tasks})


def _holders(answer: Blocked) -> str:
    """Who holds a tasks file's run lock: the runs, not the lock's internal name."""
    return ", ".join(dict.fromkeys(b.holder.describe() for b in answer.blockers))


def start_background(taskfile: TaskFile, args: list[str]) -> str:
    """Start `novaproc <args>` detached (own session, no terminal) and return its run id once
    its journal exists, so `status` and `wait` know it at once."""
    ready_r, ready_w = os.pipe()
    with tempfile.TemporaryFile() as err:
        child = subprocess.Popen([sys.executable, "-m", "novaproc", *args, "--ready-fd", str(ready_w)],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                 pass_fds=(ready_w,), start_new_session=True)
        os.close(ready_w)
        with os.fdopen(ready_r, "rb") as ready:
            run_id = ready.read().decode()
        if not run_id:
            code = child.wait()
            err.seek(0)
            why = [line.removeprefix("novaproc: error: ")
                   for line in err.read().decode(errors="replace").strip().splitlines()]
            if code == ExitCode.BUSY and why:  # --if-busy skip: the same answer as in the foreground
                raise BusyError(why[-1])
            fault = UsageError if code == ExitCode.USAGE else EnvironmentFault  # its exit code, ours
            raise fault(f"the background run of {taskfile.path} did not start"
                        + (f": {why[-1]}" if why else ""))
    return run_id


def _task_metas(plan: Plan, hashes: Mapping[str, str]) -> tuple[TaskMeta, ...]:
    return tuple(TaskMeta(t.id, t.label, hashes[t.id], str(t.kind), tuple(t.env)) for t in plan.tasks)


def _description(plan: Plan) -> str:
    first = plan.tasks[0].label
    return first if len(plan.tasks) == 1 else f"{first} and {len(plan.tasks) - 1} more"
