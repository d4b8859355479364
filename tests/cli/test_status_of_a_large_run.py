"""`status RUN` of a run with more tasks than it lists: every task that did not succeed, the
first others up to the limit, the counts by state, and the summary read instead of the events."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support.cli import run_cli
from support.events import event

from novaproc.cli.runs import MAX_TASK_ROWS
from novaproc.messages import TaskState
from novaproc.state import reader
from novaproc.state.format import RunMeta, TaskMeta
from novaproc.state.journal import Journal
from novaproc.state.reader import load_run


def large_run(state: Path, tmp_path: Path, n: int, failing: set[int]) -> str:
    """A finished run of `n` tasks written through the Journal, the tasks in `failing` failed."""
    tasks = tuple(TaskMeta(f"t{i}", "", f"h{i}") for i in range(n))
    with Journal.create(state, RunMeta(str(tmp_path / "tasks.toml"), str(tmp_path), tasks, pid=1,
                                       pid_start=1)) as j:
        j.record(event(j.run_id, 1000, "run_started", tasks=n))
        for i in range(n):
            j.record(event(j.run_id, 1000, "task_state", f"t{i}", TaskState.RUNNING, attempt=1))
            end = (TaskState.FAILED, 3) if i in failing else (TaskState.DONE, 0)
            j.record(event(j.run_id, 1001, "task_state", f"t{i}", end[0], attempt=1, exit_code=end[1]))
        j.record(event(j.run_id, 1002, "run_finished", exit_code=1, wall=2.0))
    return j.run_id


def test_a_large_run_lists_what_failed_and_the_first_others(tmp_path: Path) -> None:
    state, n = tmp_path / "state", MAX_TASK_ROWS + 50
    run_id = large_run(state, tmp_path, n, failing={3, n - 1})
    out = run_cli("status", run_id, "--state-dir", str(state), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if re.match(r"  t\d+ ", line)]
    assert len(rows) == MAX_TASK_ROWS
    assert rows[3][:2] == ["t3", "failed"] and rows[-1][:2] == [f"t{n - 1}", "failed"]
    assert rows[-2][0] == f"t{MAX_TASK_ROWS - 2}"  # 998 done ones, in order (t3 failed)
    assert f"  tasks:      {n:,}: {n - 2:,} done, 2 failed" in out.stdout
    assert out.stdout.rstrip().endswith("... and 50 more done (status --json lists every task)")
    listed = json.loads(run_cli("status", run_id, "--json", "--state-dir", str(state), cwd=tmp_path).stdout)
    assert len(listed["tasks"]) == n


def test_status_of_a_finished_run_reads_its_summary_not_its_events(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    run_id = large_run(state, tmp_path, 20, failing={5})
    monkeypatch.setattr(reader, "parse_events", lambda path: pytest.fail(f"replayed {path}"))
    record = load_run(state, run_id, to_show=True)
    assert [t.state for t in record.tasks].count(TaskState.FAILED) == 1
    assert [r.id for r in reader.list_runs(state)] == [run_id]
