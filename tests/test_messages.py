"""Events on the wire: each typed payload gives the JSON the journal and --json have always
carried, and reads back as the same event."""

from __future__ import annotations

import pytest

from novaproc.messages import (
    Event,
    Level,
    MergeDone,
    Message,
    Phase,
    RunFinished,
    RunResumed,
    RunStarted,
    TaskChanged,
    TaskPid,
    TaskState,
)

WIRE = [
    (Event("r1", 5.0, RunStarted(42, "dag", 1.5, 4, 3)),
     {"event": "run_started", "run_id": "r1", "time": 5.0, "pid": 42, "strategy": "dag",
      "estimated_speedup": 1.5, "max_parallel": 4, "tasks": 3}),
    (Event("r1", 5.0, TaskChanged(TaskState.RUNNING, attempt=2), "t"),
     {"event": "task_state", "run_id": "r1", "time": 5.0, "task": "t", "state": "running", "attempt": 2}),
    (Event("r1", 5.0, TaskChanged(TaskState.WAITING, reason="lock on a held by b"), "t"),
     {"event": "task_state", "run_id": "r1", "time": 5.0, "task": "t", "state": "waiting",
      "reason": "lock on a held by b"}),
    (Event("r1", 5.0, TaskChanged(TaskState.FAILED, attempt=1, duration=0.5, signal=9), "t"),
     {"event": "task_state", "run_id": "r1", "time": 5.0, "task": "t", "state": "failed", "attempt": 1,
      "duration": 0.5, "exit_code": None, "signal": 9}),  # an attempt's end says its code, None too
    (Event("r1", 5.0, TaskChanged(TaskState.DONE, duration=2.0, exit_code=0, commit="c0", kept=True), "t"),
     {"event": "task_state", "run_id": "r1", "time": 5.0, "task": "t", "state": "done", "duration": 2.0,
      "exit_code": 0, "commit": "c0", "kept": True}),
    (Event("r1", 5.0, TaskPid(1, 99), "t"),
     {"event": "task_pid", "run_id": "r1", "time": 5.0, "task": "t", "attempt": 1, "pid": 99}),
    (Event("r1", 5.0, Message(Level.WARNING, "careful")),
     {"event": "message", "run_id": "r1", "time": 5.0, "level": "warning", "text": "careful"}),
    (Event("r1", 5.0, MergeDone("c1", ("a",), {"b": ("f.txt",)}, {"b": "conflicts in f.txt"}, None, ("b",),
                                None, 3)),
     {"event": "merge", "run_id": "r1", "time": 5.0, "commit": "c1", "merged": ["a"],
      "conflicts": {"b": ("f.txt",)}, "left_out": {"b": "conflicts in f.txt"}, "culprit": None,
      "reruns": ["b"], "waiting_branch": None, "exit_code": 3}),
    (Event("r1", 5.0, MergeDone("c2", ("a",), {}, {}, None, (), None, 0, "main", True)),
     {"event": "merge", "run_id": "r1", "time": 5.0, "commit": "c2", "merged": ["a"], "conflicts": {},
      "left_out": {}, "culprit": None, "reruns": [], "waiting_branch": None, "exit_code": 0,
      "target": "main", "verified": True}),
    (Event("r1", 5.0, Phase("verify", "verify on the merged result: passed", 1.5)),
     {"event": "phase", "run_id": "r1", "time": 5.0, "name": "verify",
      "text": "verify on the merged result: passed", "seconds": 1.5}),
    (Event("r1", 5.0, Phase("merge", "merging 2 result(s) into main")),
     {"event": "phase", "run_id": "r1", "time": 5.0, "name": "merge",
      "text": "merging 2 result(s) into main"}),
    (Event("r1", 5.0, RunResumed(7, 123, "crashed")),
     {"event": "run_resumed", "run_id": "r1", "time": 5.0, "pid": 7, "pid_start": 123,
      "previous": "crashed"}),
    (Event("r1", 5.0, RunFinished(143, "cancelled", 0.0, 0.0)),
     {"event": "run_finished", "run_id": "r1", "time": 5.0, "exit_code": 143, "state": "cancelled",
      "wall": 0.0, "task_time": 0.0}),
]


@pytest.mark.parametrize(("event", "wire"), WIRE, ids=[w["event"] for _, w in WIRE])
def test_each_payload_has_its_wire_form_and_reads_back(event: Event, wire: dict) -> None:
    assert event.to_json() == wire
    again = Event.from_json(event.to_json())
    assert again.to_json() == wire and again.kind == event.kind and again.state == event.state


def test_a_newer_writers_extra_fields_are_ignored_and_an_unknown_kind_is_refused() -> None:
    newer = {"event": "task_pid", "run_id": "r", "time": 1, "task": "t", "attempt": 1, "pid": 2,
             "cgroup": "x"}
    assert Event.from_json(newer).payload == TaskPid(1, 2)
    with pytest.raises(KeyError):
        Event.from_json({"event": "throttle", "run_id": "r", "time": 1})
