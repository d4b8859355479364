"""The run loop (novaproc.supervisor) driven from Python: a plan from make_plan, tasks from a
real tasks file, real worker processes; an injected throttle, gate or clock where the test is
about them. Order and overlap come from timestamps the tasks record themselves."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.stamps import max_overlap, read_stamps, stamp_cmd, stamped
from support.tasks import toml_value, write_tasks

from novaproc.errors import ExitCode
from novaproc.execution.pool import WorkerPool
from novaproc.execution.throttle import Load, Throttle
from novaproc.inputs.settings import Settings
from novaproc.inputs.taskfile import Task, load_tasks
from novaproc.isolation.interface import InPlace
from novaproc.messages import Event, TaskState
from novaproc.planning.plan import make_plan
from novaproc.run.outcome import RunOutcome
from novaproc.run.parts import RunParts
from novaproc.run.supervisor import Supervisor

pytestmark = pytest.mark.usefixtures("hang_guard")


class Runner:
    """Loads a tasks file and runs it with a Supervisor, keeping the events."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.stamps = tmp_path / "stamps"
        self.events: list[Event] = []
        self.logs = tmp_path / "logs"
        self.logs.mkdir(exist_ok=True)

    def __call__(self, text: str, *, throttle: Throttle | None = None, gate=None, pool=None,
                 clock: Callable[[], float] = time.monotonic, **settings) -> RunOutcome:
        taskfile = load_tasks(write_tasks(self.tmp_path, text))
        settings = {"cpu_limit": 100.0, "memory_limit": 100.0, "kill_grace": 1.0, **settings}
        config = Settings(**settings)
        plan = make_plan(list(taskfile.tasks), root=str(taskfile.root), slots=config.max_parallel,
                         isolation="none", resources=config.resources)
        executor = pool or WorkerPool(config.max_parallel, config.kill_grace)
        parts = RunParts("r-test", executor, InPlace(taskfile.root), self.events.extend,
                         lambda tid: self.logs / f"{tid}.log", gate=gate, throttle=throttle, clock=clock)
        return Supervisor(plan, config, parts).run()

    def spans(self) -> dict[str, list[tuple[float, float]]]:
        return read_stamps(self.stamps)

    def states(self, tid: str) -> list[str]:
        return [str(e.state) for e in self.events if e.kind == "task_state" and e.task_id == tid]

    def reasons(self, tid: str) -> list[str]:
        return [e.payload.reason or "" for e in self.events
                if e.kind == "task_state" and e.task_id == tid and e.state == TaskState.WAITING]


@pytest.fixture
def run(tmp_path: Path) -> Runner:
    return Runner(tmp_path)


# ---------------------------------------------------------------- throttle


def test_an_overloaded_machine_runs_tasks_one_at_a_time_and_says_why(run):
    overloaded = Throttle(90.0, 90.0, sampler=lambda: Load(99.0, 40.0), interval=0.0)
    outcome = run(stamped(run.stamps, ["a", "b", "c", "d"], 0.2), throttle=overloaded, max_parallel=4)
    assert outcome.exit_code == ExitCode.OK
    spans = run.spans()
    assert sorted(spans) == ["a", "b", "c", "d"]
    assert max_overlap(spans) == 1
    reasons = [r for tid in "abcd" for r in run.reasons(tid)]
    assert reasons and all(r.startswith("throttled") for r in reasons)
    assert any("CPU 99%" in r for r in reasons)


def test_the_summary_says_how_long_the_load_held_starts_and_what_helps(run):
    overloaded = Throttle(90.0, 90.0, sampler=lambda: Load(99.0, 40.0), interval=0.0)
    outcome = run(stamped(run.stamps, ["a", "b", "c", "d"], 0.5), throttle=overloaded, max_parallel=4)
    note = next(n for n in outcome.notes if "load held" in n)
    held = float(re.search(r"for (\d+)s in all", note).group(1))
    assert 1 <= held <= outcome.wall and "cpu_limit = 100" in note


def test_a_machine_under_its_limits_runs_tasks_together(run):
    calm = Throttle(90.0, 90.0, sampler=lambda: Load(10.0, 10.0), interval=0.0)
    outcome = run(stamped(run.stamps, ["a", "b", "c"], 0.5), throttle=calm, max_parallel=3)
    assert outcome.exit_code == ExitCode.OK
    assert not any("load held" in n for n in outcome.notes)
    assert max_overlap(run.spans()) >= 2
    assert not any(run.reasons(tid) for tid in "abc")


def test_throttle_lifts_when_the_load_falls(run):
    loads = iter([Load(99.0, 10.0)] * 3)
    gate = Throttle(90.0, 90.0, sampler=lambda: next(loads, Load(5.0, 5.0)), interval=0.0)
    outcome = run(stamped(run.stamps, ["a", "b", "c", "d"], 0.4), throttle=gate, max_parallel=4)
    assert outcome.exit_code == ExitCode.OK
    assert max_overlap(run.spans()) >= 2  # once the load fell, the rest started together


def test_a_slot_freed_while_throttled_is_refilled_without_waiting_for_the_next_interval(run):
    """The load that paused starts was the ended task's own: a recheck after its end lets
    the next task start, rather than the next reading an interval later."""
    class OwnLoad:
        """CPU over the span since the last reading, as psutil gives it, on a machine that is
        as busy as our tasks make it: 99% if two of them ran at any time in it, else 50%. What
        runs is what the tasks' own stamps say, as psutil sees processes, not the events."""

        def __init__(self) -> None:
            self.seen = self.running = 0

        def __call__(self) -> Load:
            busiest = self.running
            lines = run.stamps.read_text().splitlines() if run.stamps.exists() else []
            for line in lines[self.seen:]:
                self.running += 1 if line.split()[1] == "start" else -1
                busiest = max(busiest, self.running)
            self.seen = len(lines)
            return Load(99.0 if busiest >= 2 else 50.0, 10.0)

    gate = Throttle(90.0, 90.0, sampler=OwnLoad(), interval=2.0)
    # a's end comes after an interval, so the reading then, covering a and b, pauses starts;
    # b runs on long after, so it is not the "none runs" rule that lets c start
    text = "".join(stamped(run.stamps, [tid], seconds)
                   for tid, seconds in (("a", 2.6), ("b", 5.0), ("c", 0.1)))
    outcome = run(text, throttle=gate, max_parallel=2)
    assert outcome.exit_code == ExitCode.OK
    spans = run.spans()
    (a_end,), (c_start,) = [e for _, e in spans["a"]], [s for s, _ in spans["c"]]
    assert c_start - a_end < 1.2  # about 0.1 s; the next interval's reading would be 2 s on
    assert any(r.startswith("throttled") for r in run.reasons("c"))


# ---------------------------------------------------------------- scheduling


def test_ready_tasks_start_longest_critical_path_first(run):
    text = f"""
        [tasks.solo]
        cmd = {toml_value(stamp_cmd(run.stamps, 0.05))}
        [tasks.head]
        cmd = {toml_value(stamp_cmd(run.stamps, 0.05))}
        [tasks.tail]
        cmd = {toml_value(stamp_cmd(run.stamps, 0.05))}
        depends_on = ["head"]
    """
    assert run(text, max_parallel=1).exit_code == ExitCode.OK
    spans = run.spans()
    order = sorted(spans, key=lambda tid: spans[tid][0][0])
    assert order == ["head", "solo", "tail"]  # head leads the longer chain; then declared order


def test_a_task_wanting_more_cpu_than_slots_still_runs_alone(run):
    text = stamped(run.stamps, ["big"], 0.2, cpu=8) + stamped(run.stamps, ["small1", "small2"], 0.2)
    outcome = run(text, max_parallel=2)
    assert outcome.exit_code == ExitCode.OK
    spans = run.spans()
    big = spans["big"][0]
    for other in ("small1", "small2"):
        s, e = spans[other][0]
        assert e <= big[0] or s >= big[1], f"{other} overlapped the cpu=8 task"


def test_a_task_wanting_more_of_a_resource_than_its_capacity_runs_alone(run):
    text = (stamped(run.stamps, ["greedy"], 0.2, resources={"db": 3})
            + stamped(run.stamps, ["modest"], 0.2, resources=["db"]))
    outcome = run(text, max_parallel=4, resources={"db": 1})
    assert outcome.exit_code == ExitCode.OK
    assert max_overlap(run.spans()) == 1


def test_resource_capacity_two_allows_two_at_once(run):
    text = stamped(run.stamps, ["a", "b", "c", "d"], 0.5, resources=["db"])
    outcome = run(text, max_parallel=4, resources={"db": 2})
    assert outcome.exit_code == ExitCode.OK
    assert max_overlap(run.spans()) == 2
    assert any(r.startswith("resource db in use") for tid in "abcd" for r in run.reasons(tid))


class RefusingGate:
    """A lock gate that refuses `tid` a few times, then grants it; counts takes and releases."""

    def __init__(self, tid: str, refusals: int) -> None:
        self.tid, self.refusals = tid, refusals
        self.taken: list[str] = []
        self.released: list[str] = []

    def try_acquire(self, task: Task) -> str | None:
        if task.id == self.tid and self.refusals > 0:
            self.refusals -= 1
            return "path src/ locked by another run"
        self.taken.append(task.id)
        return None

    def release(self, task: Task) -> None:
        self.released.append(task.id)

    def cancel(self, task: Task) -> None:
        pass

    def fileno(self) -> int | None:
        return None


def test_a_task_refused_by_the_gate_waits_with_its_reason_then_runs(run):
    gate = RefusingGate("b", refusals=3)
    outcome = run(stamped(run.stamps, ["a", "b"], 0.1), gate=gate, max_parallel=2)
    assert outcome.exit_code == ExitCode.OK
    assert run.reasons("b") == ["path src/ locked by another run"]
    assert run.states("b")[-2:] == ["running", "done"]
    assert sorted(gate.taken) == sorted(gate.released) == ["a", "b"]


def test_a_gate_refusing_while_nothing_runs_is_polled_not_stuck(run):
    gate = RefusingGate("only", refusals=5)
    outcome = run(stamped(run.stamps, ["only"], 0.05), gate=gate)
    assert outcome.exit_code == ExitCode.OK
    assert gate.refusals == 0


# ---------------------------------------------------------------- events and outcome


def test_every_task_ends_exactly_once_and_events_carry_the_run_id(run):
    text = """
        [tasks.ok]
        cmd = "true"
        [tasks.bad]
        cmd = "exit 5"
        [tasks.after_bad]
        cmd = "true"
        depends_on = ["bad"]
        [tasks.after_after]
        cmd = "true"
        depends_on = ["after_bad"]
    """
    outcome = run(text)
    assert outcome.exit_code == ExitCode.FAILED
    assert all(e.run_id == "r-test" for e in run.events)
    assert run.events[0].kind == "run_started" and run.events[-1].kind == "run_finished"
    final = {}
    for e in run.events:
        if e.kind == "task_state" and e.state is not None and e.state.finished:
            assert e.task_id not in final, f"{e.task_id} ended twice"
            final[e.task_id] = str(e.state)
    assert final == {"ok": "done", "bad": "failed", "after_bad": "skipped", "after_after": "skipped"}
    assert {tid: str(r.state) for tid, r in outcome.records.items()} == final
    assert outcome.records["bad"].exit_code == 5
    assert outcome.records["after_bad"].attempts == 0


def test_a_retry_waits_with_a_reason_and_runs_attempt_two(run, tmp_path):
    counter = tmp_path / "count"
    cmd = f"n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}; [ $n -ge 2 ]"
    outcome = run(f"[tasks.flaky]\ncmd = {toml_value(cmd)}\nretries = 2\n")
    assert outcome.exit_code == ExitCode.OK
    rec = outcome.records["flaky"]
    assert rec.state == TaskState.DONE and rec.attempts == 2
    assert counter.read_text().strip() == "2"
    reasons = run.reasons("flaky")
    assert len(reasons) == 1 and "attempt 1 failed" in reasons[0] and "retrying" in reasons[0]
    running = [e.payload.attempt for e in run.events if e.task_id == "flaky" and e.state == "running"]
    assert running == [1, 2]


def test_an_allowed_failure_does_not_stop_a_fail_fast_run(run):
    text = f"""
        [tasks.shaky]
        cmd = "exit 1"
        allow_failure = true
        {stamped(run.stamps, ["steady"], 0.5)}
    """
    outcome = run(text, fail_fast=True, max_parallel=2)
    assert outcome.exit_code == ExitCode.OK
    assert outcome.records["shaky"].state == TaskState.FAILED
    assert outcome.records["steady"].state == TaskState.DONE


def test_speedup_is_task_time_over_the_tasks_wall(run):
    outcome = run(stamped(run.stamps, ["a", "b"], 0.3), max_parallel=2)
    assert outcome.task_time == pytest.approx(sum(r.run_time for r in outcome.records.values()))
    assert 0.3 <= outcome.times["tasks"] <= outcome.wall
    assert outcome.speedup == pytest.approx(outcome.task_time / outcome.times["tasks"])
    for rec in outcome.records.values():
        assert rec.run_time >= 0.3


# ---------------------------------------------------------------- timeouts and the clock


IGNORES_TERM = "trap '' TERM; sleep 3"


class CountingPool(WorkerPool):
    """A real pool that counts how often the loop waits on it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.waits = 0

    def wait(self, timeout, wake=None):
        self.waits += 1
        return super().wait(timeout, wake)


def test_the_loop_sleeps_while_it_waits_out_the_kill_grace(run):
    text = f"[tasks.stubborn]\ncmd = {toml_value(IGNORES_TERM)}\ntimeout = 0.2\n"
    pool = CountingPool(1, 1.0)
    outcome = run(text, kill_grace=1.0, pool=pool)
    assert outcome.records["stubborn"].error == "timed out after 0.2s"
    assert outcome.records["stubborn"].run_time >= 1.0
    # a few wake-ups (reports, the deadline, SIGKILL) - not a spin over the 1 s grace
    assert pool.waits < 50, f"the loop waited {pool.waits} times"


@pytest.mark.parametrize("offset", [1e4, -1e4])
def test_an_injected_clock_does_not_change_the_kill_grace(run, offset):
    text = f"[tasks.stubborn]\ncmd = {toml_value(IGNORES_TERM)}\ntimeout = 0.2\n"
    outcome = run(text, kill_grace=1.0, clock=lambda: time.monotonic() + offset)
    rec = outcome.records["stubborn"]
    assert rec.error == "timed out after 0.2s"
    assert rec.signal == signal.SIGKILL  # killed, not left to finish its sleep
    assert rec.run_time >= 0.2 + 0.9  # and only after the grace period
