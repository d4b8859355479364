"""How a run's exit code follows from its tasks (novaproc.outcome.run_exit_code): pure."""

from __future__ import annotations

import signal

import pytest

from novaproc.errors import ExitCode
from novaproc.inputs.taskfile import Task
from novaproc.messages import TaskState
from novaproc.run.outcome import TaskRecord, describe_failure, run_exit_code


def records(*states: str, allow_failure: bool = False) -> list[TaskRecord]:
    return [TaskRecord(Task(id=f"t{i}", cmd="true", allow_failure=allow_failure), state=TaskState(s))
            for i, s in enumerate(states)]


@pytest.mark.parametrize(("states", "code"), [
    (("done", "done"), ExitCode.OK),
    (("done", "failed", "skipped"), ExitCode.FAILED),
    (("done", "cancelled"), ExitCode.FAILED),
    (("done", "skipped"), ExitCode.OK),  # a skip's cause decides, not the skip
])
def test_a_task_that_may_not_fail_decides_the_code(states, code):
    assert run_exit_code(records(*states), ExitCode.OK, None) == code


def test_allowed_failures_leave_the_code_to_the_landing():
    assert run_exit_code(records("failed", "done", allow_failure=True), ExitCode.OK, None) == ExitCode.OK
    landed = ExitCode.VERIFY  # the merged result failed verify
    assert run_exit_code(records("done"), landed, None) == landed
    assert run_exit_code(records("failed"), landed, None) == ExitCode.FAILED


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_that_stopped_the_run_gives_128_plus_its_number(signum, code):
    assert run_exit_code(records("done", "failed"), ExitCode.OK, signum) == code


@pytest.mark.parametrize(("error", "sig", "code", "text"), [
    ("boom", None, 1, "boom"), (None, signal.SIGKILL, None, "killed by SIGKILL"),
    (None, None, 3, "exit code 3"), (None, None, None, "failed, with no exit code"),
])
def test_a_failure_is_described_in_a_few_words(error, sig, code, text):
    assert describe_failure(error, sig, code) == text
