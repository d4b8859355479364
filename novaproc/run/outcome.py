"""What a run's supervisor knows of each task, and how the run came out: the records the
views, the JUnit report and the CLI's exit code are made from.
"""

from __future__ import annotations

import signal as signal_module
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from novaproc.errors import ExitCode
from novaproc.messages import MergeDone, RunState, TaskState

if TYPE_CHECKING:  # status and logs format through here: they must not load pydantic
    from novaproc.inputs.taskfile import Task
    from novaproc.isolation.interface import Landing
    from novaproc.messages import Finished


@dataclass(slots=True)  # one per task: no __dict__ each (a run of 100,000 holds them all)
class TaskRecord:
    """What the supervisor knows of one task."""

    task: Task
    state: TaskState = TaskState.QUEUED
    attempts: int = 0
    started_at: float | None = None  # wall clock, first attempt
    ended_at: float | None = None
    run_time: float = 0.0  # seconds spent running, all attempts
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    value: Any = None
    reason: str | None = None  # why it waits
    timed_out: bool = False
    pid: int | None = None
    commit: str | None = None  # its result, in worktree isolation
    earlier_attempts: int = 0  # made before a resume, by an earlier supervisor of the run

    def begin(self) -> None:
        """A new attempt: what the last one left is forgotten."""
        self.attempts += 1
        self.reason, self.timed_out, self.commit = None, False, None
        self.state = TaskState.RUNNING

    def heard(self, report: Finished) -> bool:
        """How its attempt ended, as its worker says; whether it succeeded."""
        self.exit_code, self.signal, self.value = report.exit_code, report.signal, report.value
        self.error = f"timed out after {self.task.timeout:g}s" if self.timed_out else report.error
        if report.started_at:
            self.run_time += max(0.0, report.ended_at - report.started_at)
        return report.ok and not self.timed_out

    def wait(self, reason: str) -> bool:
        """It waits, for `reason`; whether that is news (a load drifting from 96% to 97% is not)."""
        if _gist(self.reason) == _gist(reason):
            return False
        self.state, self.reason = TaskState.WAITING, reason
        return True

    @property
    def failure(self) -> str:
        return describe_failure(self.error, self.signal, self.exit_code)

    @property
    def all_attempts(self) -> int:
        return self.earlier_attempts + self.attempts


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    exit_code: ExitCode
    wall: float
    task_time: float
    estimated_speedup: float
    records: dict[str, TaskRecord] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    merge: MergeDone | None = None  # how the results landed; None when nothing was merged
    times: dict[str, float] = field(default_factory=dict)  # seconds of "tasks", "landing", "verify"

    @property
    def speedup(self) -> float:
        """Task time over the time the tasks took together; landing and verify are apart."""
        wall = self.times.get("tasks", self.wall)
        return self.task_time / wall if wall > 0 else 1.0

    @property
    def state(self) -> RunState:
        if self.exit_code.stopped_by_signal:
            return RunState.CANCELLED
        return RunState.DONE if self.exit_code == ExitCode.OK else RunState.FAILED


def outcome_of(run_id: str, records: dict[str, TaskRecord], landing: Landing, notes: list[str],
               stopped_by: int | None, *, wall: float, times: dict[str, float],
               estimated: float) -> RunOutcome:
    """How a run ended: its exit code, task time, notes (with how to go on after a signal)."""
    code = run_exit_code(records.values(), landing.exit_code, stopped_by)
    if code.stopped_by_signal:  # Ctrl-C, cancel, a closed terminal: say how to go on
        notes = [*notes, f"continue it with: novaproc resume {run_id}"]
    return RunOutcome(run_id, code, wall, sum(r.run_time for r in records.values()), estimated,
                      dict(records), (*landing.notes, *notes), landing.merge, dict(times))


def run_exit_code(records: Iterable[TaskRecord], landed: ExitCode, stopped_by: int | None) -> ExitCode:
    """How a run ends, for its shell: 128 + the signal that stopped it before or during the
    merge (129 / 130 / 143); else FAILED if a task that may not fail failed or was cancelled;
    else what bringing the results to the target gave (`landed`). Skipped tasks do not
    count: their cause failed the run already, or was allowed to fail."""
    if stopped_by is not None:
        return ExitCode(128 + stopped_by)
    failed = any(r.state in (TaskState.FAILED, TaskState.CANCELLED) and not r.task.allow_failure
                 for r in records)
    return ExitCode.FAILED if failed else landed


def describe_failure(error: str | None, signal: int | None, exit_code: int | None) -> str:
    """Why an attempt failed, in a few words: its error, the signal that ended it, or its code."""
    if error:
        return error
    if signal:
        return f"killed by {_signal_name(signal)}"
    return "failed, with no exit code" if exit_code is None else f"exit code {exit_code}"


def _signal_name(signum: int) -> str:
    try:
        return signal_module.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _gist(reason: str | None) -> str | None:
    """A waiting reason without its figures."""
    return None if reason is None else "".join(c for c in reason if not c.isdigit())
