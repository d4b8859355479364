"""A run that stops (fail_fast, Ctrl-C) while worktree work is under way beside the loop: a
base found to conflict, a parent run again for a base. The isolation is a stand-in whose
prepare waits for what the test says (where it runs is not the point: the loop's decisions
are); the tasks run in real worker processes."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.tasks import write_tasks

from novaproc.execution.pool import WorkerPool
from novaproc.inputs.settings import Settings
from novaproc.inputs.taskfile import Task, load_tasks
from novaproc.isolation.interface import BaseConflict, Finish, InPlace
from novaproc.messages import Event, TaskState
from novaproc.planning.plan import make_plan
from novaproc.run.outcome import RunOutcome
from novaproc.run.parts import RunParts
from novaproc.run.supervisor import Supervisor

WAIT = 30  # seconds at most that a stand-in prepare waits for a task's end
PARENTS = '[tasks.p1]\ncmd = "true"\n[tasks.p2]\ncmd = "true"\n' \
          '[tasks.w]\ncmd = "true"\ndepends_on = ["p1", "p2"]\n'
FINAL = {TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED, TaskState.SKIPPED}


pytestmark = pytest.mark.usefixtures("hang_guard")


class Staged(InPlace):
    """Blocks like a worktree isolation; `on_prepare[task id]` runs first in its prepare (given
    the commits it starts from); a successful task's result is the commit c-<id>."""

    def blocks(self, task: Task) -> bool:
        return True

    def __init__(self, root: Path, on_prepare: dict[str, Callable[[list[str]], None]]) -> None:
        super().__init__(root)
        self.on_prepare = on_prepare
        self.finished: dict[str, threading.Event] = {}

    def prepare(self, task: Task, parents: list[str]) -> Path:
        if task.id in self.on_prepare:
            self.on_prepare[task.id](parents)
        return self.root

    def finish(self, task: Task, ok: bool, exit_code: int | None = None) -> Finish:
        self.finished.setdefault(task.id, threading.Event()).set()
        return Finish(commit=f"c-{task.id}") if ok else Finish()

    def wait_finished(self, tid: str) -> None:
        assert self.finished.setdefault(tid, threading.Event()).wait(WAIT)


def run(tmp_path: Path, text: str, isolation: Staged, events: list[Event]) -> RunOutcome:
    taskfile = load_tasks(write_tasks(tmp_path, text))
    settings = Settings(cpu_limit=100.0, memory_limit=100.0, kill_grace=1.0, max_parallel=4, fail_fast=True)
    plan = make_plan(list(taskfile.tasks), root=str(taskfile.root), slots=4, isolation="none")
    parts = RunParts("r-stops", WorkerPool(4, 1.0), isolation, events.extend,
                     lambda tid: tmp_path / f"{tid}.log")
    return Supervisor(plan, settings, parts).run()


def conflicts_once(parent: int) -> Callable[[list[str]], None]:
    """A prepare whose first call finds the parent at `parent` conflicting with those before it."""
    calls: list[object] = []

    def prepare(parents: list[str]) -> None:
        calls.append(parents)
        if len(calls) == 1:
            raise BaseConflict("conflict", parent, "merged", ("x.txt",))
    return prepare


def states(outcome: RunOutcome) -> dict[str, TaskState]:
    return {tid: rec.state for tid, rec in outcome.records.items()}


def test_a_base_conflict_heard_after_fail_fast_ends_its_task(tmp_path: Path) -> None:
    """w's parents conflict, found once f has failed: nothing runs again, w ends (it waited for
    a rebuild that never came, and so did the run)."""
    isolation: Staged = Staged(tmp_path, {})

    def w_prepare(parents: list[str]) -> None:
        isolation.wait_finished("f")
        time.sleep(0.3)  # the loop hears f, and fail_fast stops the run
        raise BaseConflict("conflict", 1, "merged", ("x.txt",))
    isolation.on_prepare["w"] = w_prepare
    events: list[Event] = []

    outcome = run(tmp_path, PARENTS + '[tasks.f]\ncmd = "sleep 0.3; exit 1"\n', isolation, events)

    assert states(outcome) == {"p1": TaskState.DONE, "p2": TaskState.DONE, "w": TaskState.CANCELLED,
                               "f": TaskState.FAILED}
    assert not any(e.kind == "task_state" and getattr(e.payload, "rerun", False) for e in events)


def test_fail_fast_during_a_parents_rerun_waits_for_it(tmp_path: Path) -> None:
    """p2 runs again for w's base; f fails meanwhile, so w is cancelled and every task of the
    schedule has ended: the loop still waits for p2's run again rather than drop it."""
    isolation = Staged(tmp_path, {"w": conflicts_once(1)})

    def p2_prepare(parents: list[str]) -> None:
        if parents == ["merged"]:  # its run again
            isolation.wait_finished("f")
            time.sleep(0.5)
    isolation.on_prepare["p2"] = p2_prepare
    events: list[Event] = []

    outcome = run(tmp_path, PARENTS + '[tasks.f]\ncmd = "sleep 0.3; exit 1"\n', isolation, events)

    assert states(outcome) == {"p1": TaskState.DONE, "p2": TaskState.DONE, "w": TaskState.CANCELLED,
                               "f": TaskState.FAILED}
    assert outcome.records["p2"].commit == "c-p2"
    reruns = [e for e in events
              if e.kind == "task_state" and e.task_id == "p2" and getattr(e.payload, "rerun", False)]
    assert [e.state for e in reruns] == [TaskState.RUNNING, TaskState.DONE]


def test_ctrl_c_during_a_parents_rerun_ends_every_task_once(tmp_path: Path) -> None:
    """The Ctrl-C comes while p2's run again is being prepared: p2 does not run again, and the
    loop goes on until z, which a SIGTERM ends, has ended too."""
    isolation = Staged(tmp_path, {"w": conflicts_once(1)})

    def p2_prepare(parents: list[str]) -> None:
        if parents == ["merged"]:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)  # the loop hears the Ctrl-C before this prepare ends
    isolation.on_prepare["p2"] = p2_prepare
    events: list[Event] = []

    outcome = run(tmp_path, PARENTS + '[tasks.z]\ncmd = "sleep 5"\n', isolation, events)

    assert set(states(outcome).values()) <= FINAL, states(outcome)
    assert outcome.records["z"].state == TaskState.CANCELLED
    assert outcome.records["w"].state == TaskState.CANCELLED
    ended = [e.task_id for e in events if e.kind == "task_state" and e.state in FINAL
             and not getattr(e.payload, "rerun", False) and not getattr(e.payload, "kept", False)]
    assert sorted(ended) == ["p1", "p2", "w", "z"]  # each task ended once
