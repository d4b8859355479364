"""Driving a WorkerPool directly in tests: jobs, the reports collected by waiting on it, and a
fixture that shuts every pool a test made."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from novaproc.execution.pool import WorkerPool
from novaproc.messages import Escalated, Finished, Job, Started

DEADLINE = 30.0
POLL = 0.05  # seconds between checks while waiting


def make_job(tmp_path: Path, tid: str = "t", **fields) -> Job:
    fields.setdefault("cwd", str(tmp_path))
    fields.setdefault("kill_grace", 1.0)
    return Job(task_id=tid, attempt=fields.pop("attempt", 1), log_path=str(tmp_path / f"{tid}.log"),
               **fields)


class Reports:
    """Everything a pool reported, collected by waiting on it."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.started: dict[str, Started] = {}
        self.finished: dict[str, Finished] = {}
        self.escalated: list[Escalated] = []

    def pump(self, timeout: float = 0.2) -> None:
        for report in self.pool.wait(timeout):
            if isinstance(report, Started):
                self.started[report.task_id] = report
            elif isinstance(report, Escalated):
                self.escalated.append(report)
            else:
                assert report.task_id not in self.finished, f"{report.task_id} finished twice"
                self.finished[report.task_id] = report

    def until_started(self, tid: str) -> Started:
        return self._until(lambda: self.started.get(tid), f"{tid} to start")

    def until_finished(self, tid: str, timeout: float = DEADLINE) -> Finished:
        return self._until(lambda: self.finished.get(tid), f"{tid} to finish", timeout)

    def _until(self, get, what: str, timeout: float = DEADLINE):
        deadline = time.monotonic() + timeout
        while (value := get()) is None:
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.pump()
        return value


@pytest.fixture
def pool():
    pools: list[WorkerPool] = []

    def make(size: int = 2, kill_grace: float = 1.0) -> tuple[WorkerPool, Reports]:
        p = WorkerPool(size, kill_grace)
        pools.append(p)
        return p, Reports(p)

    yield make
    for p in pools:
        p.shutdown()


def kill_worker_of(reports: Reports, tid: str) -> None:
    os.kill(psutil.Process(reports.until_started(tid).pid).ppid(), signal.SIGKILL)
