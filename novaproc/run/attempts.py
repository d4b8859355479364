"""One attempt of a task, from the slot it took to its kept result: its folder prepared by the
Isolation, its job run by the Executor under its deadline, what it left kept by the Isolation.

The Isolation's part runs beside the loop where it takes a while (Groundwork: a worktree's
checkout, a commit); how the attempt went is then told, on the loop, to the supervisor's
Verdicts, which decide what becomes of the task (it runs again, ends, or waits for a base).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Protocol, TypeVar

from novaproc.errors import NovaError
from novaproc.inputs.settings import Settings
from novaproc.isolation.interface import BaseConflict, Finish
from novaproc.messages import Finished, Level, Message, Payload, TaskChanged, TaskState
from novaproc.run.bases import job_for
from novaproc.run.groundwork import Groundwork, Outcome
from novaproc.run.outcome import TaskRecord
from novaproc.run.parts import RunParts
from novaproc.run.timers import Timers

T = TypeVar("T")


class Verdicts(Protocol):
    """What the supervisor decides as an attempt goes; called on the loop."""

    def go_ahead(self, rec: TaskRecord) -> bool:
        """Its folder is made (or failed): does it still run (not if the run stopped meanwhile)?"""

    def base_conflict(self, rec: TaskRecord, parent: str, conflict: BaseConflict) -> None:
        """The results it starts from conflict: `parent` is to run again on those before it."""

    def abandoned(self, rec: TaskRecord) -> None:
        """It did not run after all, the run having stopped; its folder was given back."""

    def ended(self, rec: TaskRecord, ok: bool, ended_at: float) -> None:
        """Its attempt ended and what it left is kept: `ok` if it succeeded and so did that."""


class Attempts:
    """The attempts under way: their folders made and results kept beside the loop, a slot's
    worth at once, when the Isolation blocks; at once otherwise."""

    def __init__(self, parts: RunParts, settings: Settings, timers: Timers,
                 emit: Callable[[Payload, str | None], None], verdicts: Verdicts) -> None:
        self.isolation, self.pool, self.timers = parts.isolation, parts.executor, timers
        self.parts, self.settings, self._emit, self._verdicts = parts, settings, emit, verdicts
        self._groundwork = Groundwork(settings.max_parallel)

    def fileno(self) -> int | None:
        """Readable when the Isolation's work for an attempt is done (see `settle`)."""
        return self._groundwork.fileno()

    def settle(self) -> None:
        self._groundwork.settle()

    def close(self) -> None:
        self._groundwork.close()

    def busy(self, tid: str) -> bool:
        return tid in self.pool.busy() or self._groundwork.busy(tid)

    def idle(self) -> bool:
        """No attempt under way (a task run again may be, its task having ended before)."""
        return not self.pool.busy() and not self._groundwork.working()

    def begin(self, rec: TaskRecord, parents: list[tuple[str, str]], *, rerun: bool = False) -> None:
        """A new attempt, its slot taken: its folder is made on the (task, commit) `parents`."""
        rec.begin()
        commits = [commit for _, commit in parents]
        self._do(rec, partial(self.isolation.prepare, rec.task, commits),
                 partial(self._prepared, rec, parents, rerun))

    def heard(self, rec: TaskRecord, report: Finished) -> None:
        """Its worker says it ended: what it left is kept, its slot held meanwhile."""
        self.timers.clear_deadline(rec.task.id)
        ok = rec.heard(report)
        self._do(rec, partial(self.isolation.finish, rec.task, ok, rec.exit_code),
                 partial(self._kept, rec, ok, report.ended_at))

    def _do(self, rec: TaskRecord, call: Callable[[], T], then: Callable[[Outcome[T]], None]) -> None:
        self._groundwork.do(rec.task.id, call, then, at_once=not self.isolation.blocks(rec.task))

    def _prepared(self, rec: TaskRecord, parents: list[tuple[str, str]], rerun: bool,
                  preparing: Outcome[Path]) -> None:
        task = rec.task
        try:
            folder: Path | None = preparing.result()
        except BaseConflict as e:
            rec.attempts -= 1  # it never ran
            self._verdicts.base_conflict(rec, parents[e.index][0], e)
            return
        except NovaError as e:
            folder, error = None, str(e)
        if not self._verdicts.go_ahead(rec):  # the run stopped meanwhile, its setup maybe with it
            self._do(rec, partial(self.isolation.abandon, task), partial(self._abandoned, rec))
        elif folder is None:  # it fails, its folder kept for inspection
            self.heard(rec, Finished(task.id, rec.attempts, None, error=error, ended_at=time.time()))
        else:
            self._run(rec, folder, rerun)

    def _run(self, rec: TaskRecord, folder: Path, rerun: bool) -> None:
        task = rec.task
        log = self.parts.log_path(task.id)
        self.pool.submit(job_for(task, rec.attempts, folder, self.parts.run_id, log, self.settings))
        if rec.started_at is None:
            rec.started_at = time.time()
        self._emit(TaskChanged(TaskState.RUNNING, attempt=rec.attempts, rerun=rerun), task.id)
        self.timers.start_deadline(task.id, task.timeout)

    def _abandoned(self, rec: TaskRecord, abandoning: Outcome[None]) -> None:
        rec.attempts -= 1
        try:
            abandoning.result()
        except NovaError as e:  # the run stops anyway: said, not raised
            self._emit(Message(Level.WARNING, f"novaproc could not give back its folder: {e}"), rec.task.id)
        self._verdicts.abandoned(rec)

    def _kept(self, rec: TaskRecord, ok: bool, ended_at: float, finishing: Outcome[Finish]) -> None:
        """What became of what it left: its result committed if it succeeded, else its folder kept."""
        try:
            finish = finishing.result()
        except NovaError as e:
            finish = Finish(problem=f"novaproc could not keep its result: {e}")
        if finish.warning:
            self._emit(Message(Level.WARNING, finish.warning), rec.task.id)
        if finish.problem:
            rec.error, ok = finish.problem, False
        else:
            rec.commit = finish.commit
        self._verdicts.ended(rec, ok, ended_at)
