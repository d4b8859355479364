"""The loop's decisions (novaproc.supervisor) on the fake executor and a fake clock: what
starts when, retries and their backoff, timeouts and their escalation, fail-fast, skips.
No process runs and nothing sleeps; test_supervisor.py drives the same loop with real workers."""

from __future__ import annotations

import signal
from pathlib import Path

from novaproc.errors import ExitCode
from novaproc.execution.fake import FakeClock, FakeExecutor
from novaproc.inputs.settings import Settings
from novaproc.inputs.taskfile import Task
from novaproc.isolation.interface import InPlace
from novaproc.messages import Message, TaskState
from novaproc.planning.plan import make_plan
from novaproc.run.outcome import RunOutcome
from novaproc.run.parts import RunParts
from novaproc.run.supervisor import Supervisor

START = 1000.0


class Loop:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path, self.clock, self.events = tmp_path, FakeClock(START), []
        self.executor = FakeExecutor(self.clock, kill_grace=5.0)

    def run(self, *tasks: Task, **settings: object) -> RunOutcome:
        config = Settings(**{"cpu_limit": 100.0, "memory_limit": 100.0, **settings})  # type: ignore[arg-type]
        plan = make_plan(list(tasks), root=str(self.tmp_path), slots=config.max_parallel, isolation="none")
        parts = RunParts("r-loop", self.executor, InPlace(self.tmp_path), self.events.extend,
                         lambda tid: self.tmp_path / f"{tid}.log", clock=self.clock)
        return Supervisor(plan, config, parts).run()

    def messages(self) -> list[str]:
        return [e.payload.text for e in self.events if isinstance(e.payload, Message)]

    def states(self, tid: str) -> list[TaskState | None]:
        return [e.state for e in self.events if e.kind == "task_state" and e.task_id == tid]


def task(tid: str, cmd: str = "exit 0", **fields: object) -> Task:
    return Task(tid, cmd=cmd, **fields)  # type: ignore[arg-type]


def starts(loop: Loop) -> dict[str, list[float]]:
    """Fake start time of every submitted job, by task."""
    found: dict[str, list[float]] = {}
    for job, at in zip(loop.executor.submitted, loop.executor.started_at, strict=True):
        found.setdefault(job.task_id, []).append(at)
    return found


def test_no_more_tasks_run_than_slots(tmp_path):
    loop = Loop(tmp_path)
    outcome = loop.run(*(task(t, "sleep 10") for t in "abc"), max_parallel=2)
    assert outcome.exit_code == ExitCode.OK
    assert starts(loop) == {"a": [START], "b": [START], "c": [START + 10]}


def test_a_failed_task_is_retried_after_a_doubling_backoff(tmp_path):
    loop = Loop(tmp_path)
    outcome = loop.run(task("flaky", "sleep 1; exit 1", retries=2))
    assert outcome.records["flaky"].attempts == 3 and outcome.exit_code == ExitCode.FAILED
    assert starts(loop)["flaky"] == [START, START + 1 + 1, START + 2 + 1 + 2]  # retry_delay 1s
    waits = [e.payload.reason for e in loop.events if e.state == TaskState.WAITING]
    assert waits[0] == "attempt 1 failed (exit code 1); retrying in 1.0s"


def test_retry_delay_sets_the_first_wait(tmp_path):
    loop = Loop(tmp_path)
    loop.run(task("flaky", "sleep 1; exit 1", retries=2), retry_delay=0.25)
    assert starts(loop)["flaky"] == [START, START + 1 + 0.25, START + 2 + 0.25 + 0.5]


def test_a_timeout_sends_sigterm_and_the_task_fails(tmp_path):
    loop = Loop(tmp_path)
    outcome = loop.run(task("slow", "sleep 60", timeout=2.0))
    rec = outcome.records["slow"]
    assert (rec.state, rec.error, rec.signal) == (TaskState.FAILED, "timed out after 2s", signal.SIGTERM)
    assert loop.clock() == START + 2


def test_a_task_that_ignores_sigterm_is_killed_after_the_grace_and_the_run_says_so(tmp_path):
    loop = Loop(tmp_path)
    outcome = loop.run(task("stubborn", "trap '' TERM; sleep 60", timeout=2.0), kill_grace=5.0)
    assert outcome.records["stubborn"].signal == signal.SIGKILL
    assert loop.clock() == START + 2 + 5
    assert "stubborn did not end within 5s of SIGTERM: sent SIGKILL" in loop.messages()


def test_fail_fast_cancels_what_has_not_started(tmp_path):
    loop = Loop(tmp_path)
    outcome = loop.run(task("bad", "exit 1"), task("later", "sleep 1", depends_on=("ok",)),
                       task("ok", "sleep 5"), max_parallel=2, fail_fast=True)
    states = {tid: r.state for tid, r in outcome.records.items()}
    assert states == {"bad": TaskState.FAILED, "ok": TaskState.CANCELLED, "later": TaskState.CANCELLED}


def test_a_failure_skips_its_dependents_and_the_rest_runs(tmp_path):
    loop = Loop(tmp_path)
    outcome = loop.run(task("bad", "exit 2"), task("child", depends_on=("bad",)),
                       task("grandchild", depends_on=("child",)), task("other"))
    states = {tid: r.state for tid, r in outcome.records.items()}
    assert states == {"bad": TaskState.FAILED, "child": TaskState.SKIPPED,
                      "grandchild": TaskState.SKIPPED, "other": TaskState.DONE}
    assert [j.task_id for j in loop.executor.submitted] == ["bad", "other"]


def test_the_longest_critical_path_starts_first(tmp_path):
    loop = Loop(tmp_path)
    loop.run(task("short"), task("head"), task("tail", depends_on=("head",)), max_parallel=1)
    assert [j.task_id for j in loop.executor.submitted] == ["head", "short", "tail"]


def test_events_of_a_run_carry_its_id_and_every_task_ends_once(tmp_path):
    loop = Loop(tmp_path)
    loop.run(task("a"), task("b", "exit 1"), task("c", depends_on=("b",)))
    assert {e.run_id for e in loop.events} == {"r-loop"}
    ends = [e.task_id for e in loop.events if e.kind == "task_state" and e.state and e.state.finished]
    assert sorted(ends) == ["a", "b", "c"]
