"""Small frozen records that cross process boundaries, and the state enums.

Supervisor -> executor: Job.  Executor -> supervisor: Started, Escalated, Finished (Report).
Supervisor -> journal and views: Event, whose kind (EventKind) names its typed payload.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar


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


ALLOWED_FAILURE = "allowed to fail"  # the reason of a failed task whose failure does not count


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
    folder: str = ""  # the checkout or worktree `cwd` lies in (a cluster's worker makes its own)
    remote: bool = False  # run on the Dask cluster, not on this machine


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
class Parcel:
    """What a cluster's worker needs to make a task's checkout: the commit it starts from, the
    objects it may lack (a git bundle, thin against `have` when that is set), and how the run
    furnishes a checkout. Plain values: it travels to another machine."""

    repo: str  # the repository's name among a worker's cached clones
    start: str  # the commit the task starts from
    bundle: bytes | None = None  # None: the worker has every object it needs, or says so
    have: str | None = None  # the commit `bundle` is thin against; None: a complete bundle
    setup: str | None = None  # worktree_setup
    include: bytes | None = None  # worktree_include's files, as a tar archive
    message: str = ""  # of the result's commit
    identity: dict[str, str] = field(default_factory=dict)  # GIT_AUTHOR_* and GIT_COMMITTER_*
    snapshot: bool = False  # isolation "none": the result is applied to the checkout, not merged
    limits: tuple[float, float] = (100.0, 100.0)  # cpu_limit, memory_limit: the worker's machine's


@dataclass(frozen=True, slots=True)
class Delivery:
    """What came back from a cluster's worker: how the attempt ended, the end of its output, and
    its result as a bundle (thin against the start commit) holding `commit`; or `missing`: the
    worker lacks `have`."""

    finished: Finished
    commit: str | None = None
    bundle: bytes | None = None
    missing: bool = False
    output: bytes = b""  # the end of the task's output not sent while it ran, from `output_at`
    output_at: int = 0


class _Record:
    """A frozen, typed record: its fields are the class's annotations (defaults from the class),
    set once. A small stand-in for a frozen dataclass, which costs about a millisecond of start-up
    per class to build, on the path of every run's first task; used for the many event payloads."""

    __slots__ = ()
    kind: ClassVar[EventKind]
    _fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls) -> None:
        cls._fields = tuple(n for n, t in cls.__annotations__.items() if not str(t).startswith("ClassVar"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(self._fields) or set(kwargs) - set(self._fields[len(args):]):
            raise TypeError(f"{type(self).__name__}{(*args, *kwargs)} does not fit {self._fields}")
        values = {**dict(zip(self._fields[:len(args)], args, strict=True)), **kwargs}
        for name in self._fields:
            if name not in values and not hasattr(type(self), name):
                raise TypeError(f"{type(self).__name__} needs {name}")
            object.__setattr__(self, name, values.get(name, getattr(type(self), name, None)))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.values() == other.values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), *(repr(v) for v in self.values().values())))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.values().items())})"

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._fields}


class Escalated(_Record):
    """A stopped task outlived `grace` seconds after SIGTERM, so its tree was sent SIGKILL."""

    task_id: str
    attempt: int
    grace: float


Report = Started | Finished | Escalated
"""What running a job reports to the supervisor."""


class EventKind(StrEnum):
    """What an Event reports; its value is the "event" field of the journal and of --json."""

    RUN_STARTED = "run_started"
    RUN_RESUMED = "run_resumed"
    TASK_STATE = "task_state"
    TASK_PID = "task_pid"
    MESSAGE = "message"
    PHASE = "phase"
    LANDING = "landing"
    MERGE = "merge"
    RUN_FINISHED = "run_finished"


class Level(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class RunStarted(_Record):
    kind: ClassVar[EventKind] = EventKind.RUN_STARTED
    pid: int
    strategy: str
    estimated_speedup: float
    max_parallel: int
    tasks: int


class RunResumed(_Record):
    """A supervisor took the run up again; `tasks` re-declares them when the file changed."""

    kind: ClassVar[EventKind] = EventKind.RUN_RESUMED
    pid: int
    pid_start: int | None
    previous: str
    tasks: tuple[dict[str, Any], ...] | None = None


class TaskChanged(_Record):
    """A task's new state. An attempt's end carries its duration and exit code (None too); a
    waiting, skipped or cancelled task says why in `reason`."""

    kind: ClassVar[EventKind] = EventKind.TASK_STATE
    state: TaskState
    attempt: int | None = None
    duration: float | None = None
    exit_code: int | None = None
    commit: str | None = None
    signal: int | None = None
    error: str | None = None
    value: Any = None
    reason: str | None = None
    kept: bool = False  # a resume kept its earlier result
    rerun: bool = False  # run again by the merge protocol


class TaskPid(_Record):
    kind: ClassVar[EventKind] = EventKind.TASK_PID
    attempt: int
    pid: int


class Message(_Record):
    kind: ClassVar[EventKind] = EventKind.MESSAGE
    level: Level
    text: str


class Phase(_Record):
    """A step of the run after its tasks, said as it happens: the merge of the results
    ("merge"), a verify run ("verify", with `seconds` once it ended), the result landing
    ("landed")."""

    kind: ClassVar[EventKind] = EventKind.PHASE
    name: str
    text: str
    seconds: float | None = None


class LandingStarted(_Record):
    """The merged result is about to land: `ref` moves from `old` to `new`, the checkout at
    `checkout` (if the branch is checked out) with it. Journaled before anything is touched."""

    kind: ClassVar[EventKind] = EventKind.LANDING
    ref: str
    old: str
    new: str
    checkout: str | None


class MergeDone(_Record):
    """How the results landed: the merged commit, what it holds, what it left out and why."""

    kind: ClassVar[EventKind] = EventKind.MERGE
    commit: str | None
    merged: tuple[str, ...]
    conflicts: dict[str, tuple[str, ...]]
    left_out: dict[str, str]
    culprit: str | None
    reruns: tuple[str, ...]
    waiting_branch: str | None
    exit_code: int
    target: str | None = None  # the branch the results went to
    verified: bool | None = None  # verify passed on what landed; None: no verify, or no verdict


class RunFinished(_Record):
    kind: ClassVar[EventKind] = EventKind.RUN_FINISHED
    exit_code: int
    state: str
    wall: float
    task_time: float
    speedup: float | None = None
    estimated_speedup: float | None = None


Payload = (RunStarted | RunResumed | TaskChanged | TaskPid | Message | Phase | LandingStarted | MergeDone
           | RunFinished)
_PAYLOADS: dict[str, type[Payload]] = {cls.kind: cls for cls in (
    RunStarted, RunResumed, TaskChanged, TaskPid, Message, Phase, LandingStarted, MergeDone, RunFinished)}
# what an event's JSON leaves out when it is unset, to keep lines short; the rest always appear
_OPTIONAL = frozenset({"attempt", "duration", "commit", "signal", "error", "value", "reason", "kept",
                       "rerun", "tasks", "speedup", "estimated_speedup", "seconds", "target", "verified"})


def _left_out(payload: Payload, name: str, value: Any) -> bool:
    if value is not None and value is not False:
        return False
    if name == "exit_code" and isinstance(payload, TaskChanged):
        return payload.duration is None  # an attempt's end says its code, None too
    return name in _OPTIONAL


@dataclass(frozen=True, slots=True)
class Event:
    """Something the supervisor reports, for the journal and the views: a typed payload, the
    run, when, and the task it is about."""

    run_id: str
    time: float
    payload: Payload
    task_id: str | None = None

    @property
    def kind(self) -> EventKind:
        return self.payload.kind

    @property
    def state(self) -> TaskState | None:
        return self.payload.state if isinstance(self.payload, TaskChanged) else None

    def to_json(self) -> dict[str, Any]:
        """The event on the wire (journal lines, --json): "event", "run_id", "time", "task",
        then the payload's fields."""
        out: dict[str, Any] = {"event": str(self.kind), "run_id": self.run_id, "time": round(self.time, 6)}
        if self.task_id is not None:
            out["task"] = self.task_id
        for name in self.payload._fields:
            value = getattr(self.payload, name)
            if not _left_out(self.payload, name, value):
                out[name] = str(value) if isinstance(value, StrEnum) else \
                    list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        """An event from its wire form; unknown fields (a newer writer's) are ignored.
        Raises KeyError, ValueError or TypeError for one that is not an event."""
        payload_type = _PAYLOADS[data["event"]]
        fields = {k: data[k] for k in payload_type._fields if k in data}
        if payload_type is TaskChanged:
            fields["state"] = TaskState(fields["state"])
        elif payload_type is Message:
            fields["level"] = Level(fields["level"])
        return cls(data["run_id"], float(data["time"]), payload_type(**fields), data.get("task"))
