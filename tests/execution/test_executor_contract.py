"""One contract for every Executor: the fake (a fake clock, scripted jobs), the local worker pool
(real processes) and the Dask executor (a real cluster of worker processes on 127.0.0.1). A new
executor is tested by adding it to EXECUTORS."""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.repo import make_repo

from novaproc.execution.dask import DaskExecutor
from novaproc.execution.fake import FakeClock, FakeExecutor
from novaproc.execution.interface import Executor
from novaproc.execution.pool import WorkerPool
from novaproc.isolation.shipping import Shipper
from novaproc.messages import Escalated, Finished, Job, Report, Started

GRACE = 0.5
DEADLINE = 30.0  # seconds of real time: an executor that takes longer has hung


def _fake(slots: int) -> Executor:
    return FakeExecutor(FakeClock(), kill_grace=GRACE)


def _pool(slots: int) -> Executor:
    return WorkerPool(slots, GRACE)


class _OnCluster(DaskExecutor):
    """The Dask executor with every job sent to the cluster: each runs on a copy of the job's
    folder (a git repository, run in place) and brings its changes back."""

    def submit(self, job: Job) -> None:
        super().submit(dataclasses.replace(job, folder=job.cwd, remote=True))


def _dask(slots: int, scheduler: str, folder: Path) -> Executor:
    make_repo(folder, {".keep": ""})
    shipper = Shipper(None, None, root=folder, run_id="contract", labels={}, setup=None, include=())
    return _OnCluster(scheduler, WorkerPool(slots, GRACE), shipper, GRACE)


EXECUTORS: dict[str, Callable[[int], Executor]] = {"fake": _fake, "local pool": _pool}


@pytest.fixture(params=[*EXECUTORS, "dask"])
def executor(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Executor]:
    if request.param == "dask":
        made = _dask(2, request.getfixturevalue("cluster").address, tmp_path)
    else:
        made = EXECUTORS[request.param](2)
    yield made
    made.shutdown()


def job(tmp_path: Path, task_id: str, shell: str, attempt: int = 1) -> Job:
    return Job(task_id, attempt, str(tmp_path / f"{task_id}.log"), str(tmp_path), shell=shell)


def until_finished(executor: Executor, ids: set[str]) -> tuple[dict[str, Finished], list[Report]]:
    """Wait until every task of `ids` finished; its Finished reports, and every report seen."""
    finished: dict[str, Finished] = {}
    seen: list[Report] = []
    deadline = time.monotonic() + DEADLINE
    while not ids <= set(finished):
        assert time.monotonic() < deadline, f"still running: {ids - set(finished)}"
        for report in executor.wait(0.5):
            seen.append(report)
            if isinstance(report, Finished):
                assert report.task_id not in finished, f"{report.task_id} finished twice"
                finished[report.task_id] = report
    return finished, seen


def test_a_job_ends_in_one_finished_with_its_exit_code(executor, tmp_path):
    executor.submit(job(tmp_path, "ok", "exit 0", attempt=3))
    executor.submit(job(tmp_path, "bad", "exit 3"))
    assert sorted(executor.busy()) == ["bad", "ok"]
    finished, _ = until_finished(executor, {"ok", "bad"})
    assert finished["ok"].ok and finished["ok"].attempt == 3
    assert finished["bad"].exit_code == 3 and not finished["bad"].ok
    assert executor.busy() == []


def test_a_job_runs_for_its_time(executor, tmp_path):
    executor.submit(job(tmp_path, "slow", "sleep 0.3"))
    finished, _ = until_finished(executor, {"slow"})
    assert finished["slow"].ended_at - finished["slow"].started_at >= 0.25


def test_terminate_ends_a_job_that_stops_on_sigterm(executor, tmp_path):
    executor.submit(job(tmp_path, "t", "sleep 30"))
    executor.wait(0.2)
    executor.terminate("t")
    finished, seen = until_finished(executor, {"t"})
    assert not finished["t"].ok and finished["t"].signal == signal.SIGTERM
    assert not [r for r in seen if isinstance(r, Escalated)]


def test_a_job_that_ignores_sigterm_is_killed_after_the_grace_and_it_is_said(executor, tmp_path):
    executor.submit(job(tmp_path, "t", "trap '' TERM; sleep 30"))
    seen = executor.wait(0.2)
    if isinstance(executor, DaskExecutor):  # a loaded cluster's worker may not have started it yet
        deadline = time.monotonic() + DEADLINE
        while not any(isinstance(r, Started) for r in seen):
            assert time.monotonic() < deadline, "never started"
            seen = executor.wait(0.5)
        time.sleep(0.2)  # its shell sets the trap
    executor.terminate("t")
    finished, seen = until_finished(executor, {"t"})
    assert finished["t"].signal == signal.SIGKILL or finished["t"].exit_code == 128 + signal.SIGKILL
    assert [r for r in seen if isinstance(r, Escalated)] == [Escalated("t", 1, GRACE)]


def test_terminate_with_kill_does_not_wait_and_is_no_escalation(executor, tmp_path):
    executor.submit(job(tmp_path, "t", "trap '' TERM; sleep 30"))
    executor.wait(0.2)
    executor.terminate("t", kill=True)
    finished, seen = until_finished(executor, {"t"})
    assert not finished["t"].ok
    assert not [r for r in seen if isinstance(r, Escalated)]


def test_wait_with_nothing_running_returns_nothing_after_its_timeout(executor):
    assert executor.wait(0.05) == []


def test_shutdown_stops_what_runs_and_may_be_called_twice(executor, tmp_path):
    executor.submit(job(tmp_path, "t", "sleep 30"))
    executor.wait(0.1)
    executor.shutdown()
    executor.shutdown()
    assert executor.busy() == []
