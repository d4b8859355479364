"""The fold of a run's events into the state of each task and of the run: what a reader
replays from the journal, and what the journal's writer keeps as it writes, to leave a summary
at the end of the run (see `summary`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from novaproc.messages import Event, EventKind, LandingStarted, TaskState
from novaproc.state.format import RunMeta


@dataclass(frozen=True, slots=True)
class RecordedTask:
    """One task as the journal last saw it. `done_hash`: the definition it last succeeded with."""

    id: str
    description: str = ""
    hash: str = ""
    kind: str = ""
    state: TaskState = TaskState.QUEUED
    attempts: int = 0
    attempt: int | None = None  # the number of the last attempt, as the supervisor counted it
    duration: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None
    reason: str | None = None
    value: Any = None
    commit: str | None = None
    pid: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    done_hash: str | None = None

    @property
    def label(self) -> str:
        return self.description or self.id

    def elapsed(self, now: float | None) -> float | None:
        """Its duration, or for a running task the time since it started (None when `now` is:
        the task of a run whose supervisor is gone ended at a time nobody recorded)."""
        if self.duration is not None or self.state is not TaskState.RUNNING or self.started_at is None:
            return self.duration
        return None if now is None else max(now - self.started_at, 0.0)


class Replay:
    """Folds the events of a run, in order, into the state of each task and of the run."""

    def __init__(self, meta: RunMeta) -> None:
        # as _declare would make them, without a dict and a copy each (100,000 tasks)
        self.tasks = {t.id: RecordedTask(t.id, t.description, t.hash, t.kind) for t in meta.tasks}
        self.started_data: dict[str, Any] = {}
        self.started: float | None = None
        self.finished: dict[str, Any] | None = None
        self.landing: LandingStarted | None = None  # announced, and not known to have ended
        self.merge: Any = None  # the last MergeDone
        self.merge_event: dict[str, Any] | None = None  # ... as the journal holds it
        self.last_time = meta.created

    def apply(self, ev: dict[str, Any]) -> None:
        kind = ev["event"]
        self.last_time = max(self.last_time, float(ev.get("time", 0)))
        if kind in (EventKind.RUN_STARTED, EventKind.RUN_RESUMED):
            self.finished = self.landing = self.merge = self.merge_event = None  # it runs, lands again
            self._declare(ev.get("tasks", ()))
            if kind == EventKind.RUN_STARTED:
                self.started_data = ev
                self.started = self.started or float(ev["time"])
        elif kind == EventKind.TASK_STATE:
            self._task(ev)
        elif kind == EventKind.TASK_PID and ev.get("task") in self.tasks:
            self.tasks[ev["task"]] = replace(self.tasks[ev["task"]], pid=ev.get("pid"))
        elif kind == EventKind.LANDING:
            self.landing = Event.from_json(ev).payload  # type: ignore[assignment]
        elif kind in (EventKind.MERGE, EventKind.RUN_FINISHED):
            self.landing = None
            if kind == EventKind.MERGE:
                self.merge, self.merge_event = Event.from_json(ev).payload, ev
            self.finished = ev if kind == EventKind.RUN_FINISHED else self.finished

    def _declare(self, tasks: Any) -> None:
        """(Re)declare tasks from a list of {"id", "description", "hash", "kind"}; a count is ignored."""
        for t in tasks if isinstance(tasks, list) else ():
            old = self.tasks.get(t["id"]) or RecordedTask(t["id"])
            self.tasks[t["id"]] = replace(old, description=t.get("description", old.description),
                                          hash=t.get("hash", old.hash), kind=t.get("kind", old.kind))

    def _task(self, ev: dict[str, Any]) -> None:
        old = self.tasks.get(ev["task"]) or RecordedTask(ev["task"])
        state, attempt = TaskState(ev["state"]), ev.get("attempt")
        if state is TaskState.RUNNING:
            again = old.state is TaskState.RUNNING and attempt in (None, old.attempt)
            new = replace(old, state=state, attempts=old.attempts + (0 if again else 1), attempt=attempt,
                          pid=ev.get("pid"), started_at=ev.get("started_at", ev["time"]), duration=None,
                          ended_at=None, exit_code=None, signal=None, error=None, reason=None)
        elif state.finished:
            start = ev.get("started_at", old.started_at)
            end = ev.get("ended_at", ev["time"])
            duration = ev.get("duration", end - start if start is not None else None)
            new = replace(old, state=state, exit_code=ev.get("exit_code"), signal=ev.get("signal"),
                          error=ev.get("error"), value=ev.get("value"), commit=ev.get("commit"),
                          started_at=start, ended_at=end, duration=duration, reason=ev.get("reason"),
                          done_hash=old.hash if state is TaskState.DONE else None)
        else:
            new = replace(old, state=state, reason=ev.get("reason"))
        self.tasks[new.id] = new

    def snapshot(self) -> tuple[dict[str, Any], Iterator[list[Any]]]:
        """The fold as JSON-able data: the run's part, and a row of field values per task (made
        as they are read: 100,000 of them are some 20 MB)."""
        head = {"started": self.started, "last_time": self.last_time, "finished": self.finished,
                "merge_event": self.merge_event, "landing": self.landing is not None,
                "started_data": {k: self.started_data[k] for k in _STARTED_KEYS if k in self.started_data}}
        rows = ([getattr(t, name) for name in _TASK_FIELDS] for t in self.tasks.values())
        return head, rows

    @classmethod
    def restore(cls, meta: RunMeta, head: dict[str, Any], rows: list[list[Any]]) -> Replay:
        """The fold `snapshot` gave, for the run of `meta`, without its events."""
        replay = cls(RunMeta(meta.tasks_file, meta.root))  # no declared tasks: the rows hold them
        replay.started, replay.last_time = head["started"], head["last_time"]
        replay.finished = head["finished"]
        replay.started_data = head["started_data"]
        if head["merge_event"] is not None:
            replay.apply(head["merge_event"])
            replay.finished = head["finished"]
        if head["landing"]:
            raise ValueError("a snapshot of a landing under way")  # only a finished run has one
        state = _TASK_FIELDS.index("state")
        for row in rows:
            row[state] = _STATES[row[state]]  # a KeyError for an unknown one
            task = RecordedTask(*row)
            replay.tasks[task.id] = task
        return replay


_TASK_FIELDS = tuple(RecordedTask.__dataclass_fields__)
_STATES = {str(s): s for s in TaskState}  # what TaskState() finds, in a tenth of the time
_STARTED_KEYS = ("strategy", "estimated_speedup")  # what a record reads of the run's start
