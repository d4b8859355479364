"""Small frozen records that cross process boundaries, and the state enums.

Supervisor -> worker: Job.  Worker -> supervisor: Started, then Finished.
The supervisor -> views/journal direction carries Event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class TaskState(StrEnum):
    QUEUED = "queued"
    WAITING = "waiting"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (TaskState.DONE, TaskState.FAILED, TaskState.SKIPPED, TaskState.CANCELLED)


class RunState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CRASHED = "crashed"


@dataclass(frozen=True, slots=True)
class Job:
    """One attempt of one task, as a worker needs it: no models, only plain values."""

    task_id: str
    attempt: int
    log_path: str
    cwd: str
    env: dict[str, str] = field(default_factory=dict)
    shell: str | None = None  # run by /bin/sh -c
    argv: tuple[str, ...] | None = None  # run directly, no shell
    call: str | None = None  # "module:function", run in the worker
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    kill_grace: float = 5.0  # SIGTERM to SIGKILL, for a worker whose supervisor died


@dataclass(frozen=True, slots=True)
class Started:
    """The worker began `task_id`; `pid` is the task's process (the worker's own for a call)."""

    task_id: str
    attempt: int
    pid: int
    started_at: float


@dataclass(frozen=True, slots=True)
class Finished:
    """How an attempt ended. `exit_code` is None when the process died by `signal`."""

    task_id: str
    attempt: int
    exit_code: int | None
    signal: int | None = None
    error: str | None = None  # why novaproc could not run it, or the call's exception
    value: Any = None  # a call task's JSON-able return value
    started_at: float = 0.0
    ended_at: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.error is None


@dataclass(frozen=True, slots=True)
class Escalated:
    """A stopped task outlived `grace` seconds after SIGTERM, so its tree was sent SIGKILL."""

    task_id: str
    attempt: int
    grace: float


Report = Started | Finished | Escalated
"""What running a job reports to the supervisor."""


@dataclass(frozen=True, slots=True)
class Event:
    """Something the supervisor reports: progress views and the journal consume these."""

    kind: str  # run_started, task_state, task_output, throttle, run_finished, message
    run_id: str
    time: float
    task_id: str | None = None
    state: TaskState | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.kind, "run_id": self.run_id, "time": round(self.time, 6)}
        if self.task_id is not None:
            out["task"] = self.task_id
        if self.state is not None:
            out["state"] = str(self.state)
        out.update(self.data)
        return out
