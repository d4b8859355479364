"""A finished run's summary: status reads it instead of replaying the journal, and it says
exactly what the replay says; a resume makes it stale, and a stale or damaged one is ignored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.events import event
from test_journal import TASKS, dead_pid, emit, finished_run, meta, reopen

from novaproc.messages import RunState, TaskState
from novaproc.state import reader
from novaproc.state.format import EVENTS_FILE, RunMeta, TaskMeta, json_pieces
from novaproc.state.journal import Journal
from novaproc.state.reader import list_runs, load_run
from novaproc.state.summary import SUMMARY_FILE

__all__ = ["dead_pid"]  # a fixture, shared with the journal's tests


def test_a_finished_run_leaves_a_summary_that_says_what_its_journal_says(
        tmp_path: Path, dead_pid: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = finished_run(tmp_path, tmp_path, dead_pid)
    assert (tmp_path / "runs" / run_id / SUMMARY_FILE).is_file()
    replayed = load_run(tmp_path, run_id)
    monkeypatch.setattr(reader, "parse_events", lambda path: pytest.fail(f"replayed {path}"))
    summarised = load_run(tmp_path, run_id, to_show=True)
    assert summarised.to_json() == replayed.to_json()
    assert summarised.tasks == replayed.tasks
    assert summarised.meta.tasks == ()  # what a resume needs comes from the journal alone
    [listed] = list_runs(tmp_path)
    assert (listed.id, listed.status, listed.exit_code, listed.wall, listed.tasks) == (
        run_id, RunState.FAILED, 1, 6.0, ())


def test_a_merge_is_in_the_summary(tmp_path: Path, dead_pid: tuple[int, int]) -> None:
    m = meta(tmp_path, pid=dead_pid[0], pid_start=dead_pid[1])
    merge = {"commit": "c" * 40, "merged": ["build"], "conflicts": {}, "left_out": {"test": "failed"},
             "culprit": None, "reruns": [], "waiting_branch": None, "exit_code": 1, "target": "main",
             "verified": True}
    with Journal.create(tmp_path, m) as j:
        emit(j, "run_started", at=1000)
        emit(j, "task_state", "build", TaskState.DONE, at=1001, attempt=1, exit_code=0, commit="c" * 40)
        j.record(event(j.run_id, 1002, "merge", **merge))
        emit(j, "run_finished", at=1003, exit_code=1, wall=3.0)
    replayed, summarised = load_run(tmp_path, j.run_id), load_run(tmp_path, j.run_id, to_show=True)
    assert summarised.merge == replayed.merge and summarised.merge is not None
    assert summarised.merge.left_out == {"test": "failed"}
    assert summarised.to_json() == replayed.to_json()


def test_a_resumed_run_is_replayed_until_it_finishes_again(tmp_path: Path, dead_pid: tuple[int, int]) -> None:
    run_id = finished_run(tmp_path, tmp_path, dead_pid)
    folder = tmp_path / "runs" / run_id
    with reopen(load_run(tmp_path, run_id), tasks=(*TASKS, TaskMeta("new", hash="n"))) as j:
        assert not (folder / SUMMARY_FILE).exists()
        emit(j, "task_state", "test", TaskState.RUNNING, at=2000, attempt=3)
        assert load_run(tmp_path, run_id, to_show=True).status is RunState.RUNNING
        emit(j, "task_state", "test", TaskState.DONE, at=2001, attempt=3, exit_code=0, duration=1.0)
        emit(j, "run_finished", at=2002, exit_code=0, wall=2.0)
    summarised = load_run(tmp_path, run_id, to_show=True)
    assert summarised.to_json() == load_run(tmp_path, run_id).to_json()
    assert (summarised.status, summarised.task("test").attempts) == (RunState.DONE, 3)
    assert summarised.task("new").state is TaskState.QUEUED


@pytest.mark.parametrize("damage", ["stale", "garbage", "newer"])
def test_a_stale_or_damaged_summary_is_ignored(tmp_path: Path, dead_pid: tuple[int, int],
                                               damage: str) -> None:
    run_id = finished_run(tmp_path, tmp_path, dead_pid)
    folder = tmp_path / "runs" / run_id
    summary = folder / SUMMARY_FILE
    if damage == "stale":  # events written after it, by something other than a resume
        with (folder / EVENTS_FILE).open("a") as f:
            f.write(json.dumps({"event": "message", "run_id": run_id, "time": 2000, "level": "info",
                                "text": "x"}) + "\n")
    elif damage == "garbage":
        summary.write_text("{not json\n")
    else:
        head, rows = summary.read_text().splitlines()
        summary.write_text(json.dumps({**json.loads(head), "novaproc_summary": 99}) + "\n" + rows + "\n")
    assert load_run(tmp_path, run_id, to_show=True).to_json() == load_run(tmp_path, run_id).to_json()
    assert list_runs(tmp_path)[0].task("test").attempts == 2  # replayed: the tasks are there


def test_a_crashed_run_has_no_summary_and_is_replayed(tmp_path: Path, dead_pid: tuple[int, int]) -> None:
    m = RunMeta(str(tmp_path / "tasks.toml"), str(tmp_path), TASKS, pid=dead_pid[0], pid_start=dead_pid[1])
    with Journal.create(tmp_path, m) as j:
        emit(j, "run_started", at=1000)
        emit(j, "task_state", "build", TaskState.RUNNING, at=1000, attempt=1)
    assert not (j.folder / SUMMARY_FILE).exists()
    record = load_run(tmp_path, j.run_id, to_show=True)
    assert record.status is RunState.CRASHED and record.task("build").state is TaskState.RUNNING


@pytest.mark.parametrize("n", [0, 1, 999, 1000, 1001, 2500])
def test_what_is_written_a_chunk_at_a_time_is_one_json_array_or_object(n: int) -> None:
    rows = [[i, "x, y", None, 1.5, {"a": [1]}] for i in range(n)]
    assert json.loads("".join(json_pieces(iter(rows)))) == rows
    pairs = {f"t{i}": {"hash": "h,}", "recent": [1.5, i]} for i in range(n)}
    assert json.loads("".join(json_pieces(pairs.items(), pairs=True))) == pairs
