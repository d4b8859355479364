"""A run put together: its journal, the supervisor and the pieces it drives, wired so that
every event reaches the journal first and the views after.

The CLI starts a run here and consumes its outcome; resume and background runs come in
through the same door.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from .config import Settings
from .journal import Journal, RunMeta, TaskMeta
from .messages import Event
from .plan import Plan
from .pool import WorkerPool
from .supervisor import RunOutcome, Supervisor
from .taskfile import TaskFile


class Run:
    """One run from start to outcome. Create with `start_run`; `close` always."""

    def __init__(self, taskfile: TaskFile, settings: Settings, plan: Plan, journal: Journal) -> None:
        self.taskfile, self.settings, self.plan, self.journal = taskfile, settings, plan, journal
        self.run_id = journal.run_id
        self._consumers: list[Callable[[Event], None]] = []
        # the forkserver starts before any view thread exists: forking a threaded process is unsafe
        self.pool = WorkerPool(settings.max_parallel, settings.kill_grace)

    def log_path(self, task_id: str) -> Path:
        return self.journal.log_path(task_id)

    def emit_to(self, consumer: Callable[[Event], None]) -> None:
        self._consumers.append(consumer)

    def _emit(self, event: Event) -> None:
        self.journal.record(event)  # durable first: a view that fails must not lose the record
        for consume in list(self._consumers):
            try:
                consume(event)
            except BrokenPipeError:  # `novaproc run ... | head`: the run goes on, unseen
                self._consumers.remove(consume)

    def execute(self) -> RunOutcome:
        isolation = None
        if self.plan.isolation == "worktree":
            from .isolation import WorktreeIsolation

            isolation = WorktreeIsolation(self.taskfile.root, self.settings, self.run_id,
                                          self.journal.folder)
            if isolation.dirty:
                self._emit(Event("message", self.run_id, time.time(), data={
                    "level": "warning", "text": f"{len(isolation.dirty)} uncommitted change(s) in "
                    f"{self.taskfile.root} are not part of the run's base: tasks see the last commit"}))
        supervisor = Supervisor(self.plan, self.settings, run_id=self.run_id, root=self.taskfile.root,
                                log_path=self.journal.start_log, emit=self._emit, pool=self.pool,
                                isolation=isolation)
        return supervisor.run()

    def close(self) -> None:
        self.pool.shutdown()
        self.journal.close()


def start_run(taskfile: TaskFile, settings: Settings, plan: Plan, *, argv: list[str]) -> Run:
    meta = RunMeta(
        tasks_file=str(taskfile.path), root=str(taskfile.root), argv=tuple(argv),
        description=_description(plan),
        tasks=tuple(TaskMeta(t.id, t.label, t.definition_hash(), str(t.kind), tuple(t.env))
                    for t in plan.tasks))
    journal = Journal.create(settings.state_path(taskfile.root), meta)
    return Run(taskfile, settings, plan, journal)


def _description(plan: Plan) -> str:
    first = plan.tasks[0].label
    return first if len(plan.tasks) == 1 else f"{first} and {len(plan.tasks) - 1} more"
