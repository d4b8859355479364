"""Durations of past runs per tasks file (novaproc.history), on real files."""

from __future__ import annotations

import json
from pathlib import Path

from novaproc.state.history import history_file, read_history, save_durations, typical_durations


def test_history_keeps_recent_successes_per_tasks_file_and_definition(tmp_path: Path) -> None:
    state, tasks = tmp_path / "state", tmp_path / "tasks.toml"
    hashes = {"build": "h-build", "test": "h-test"}
    save_durations(state, tasks, {"build": 3.0}, hashes)
    save_durations(state, tmp_path / "other.toml", {"build": 50.0, "lint": 1.0},
                   {"build": "h-build", "lint": "h-lint"})
    assert typical_durations(state, tasks, hashes) == {"build": 3.0}  # test never succeeded: no time
    spelled_otherwise = tmp_path / "." / "tasks.toml"  # one file, two spellings
    assert typical_durations(state, spelled_otherwise, hashes) == {"build": 3.0}
    assert typical_durations(state, tasks, {"build": "edited"}) == {}
    # a new definition starts afresh
    save_durations(state, tasks, {"build": 8.0}, {"build": "edited"})
    assert typical_durations(state, tasks, {"build": "edited"}) == {"build": 8.0}
    assert typical_durations(state, tasks, hashes) == {}
    assert typical_durations(tmp_path / "nothing", tasks, hashes) == {}


def test_history_is_the_median_of_the_last_three_and_survives_a_damaged_file(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.toml"
    for duration in (100.0, 4.0, 5.0, 9.0):
        save_durations(tmp_path, tasks, {"build": duration}, {"build": "h-build"})
    assert typical_durations(tmp_path, tasks, {"build": "h-build"}) == {"build": 5.0}  # of 9, 5, 4
    history_file(tmp_path, tasks).write_text("garbage")
    assert typical_durations(tmp_path, tasks, {"build": "h-build"}) == {}  # an estimate never fails a run
    save_durations(tmp_path, tasks, {"build": 2.0}, {"build": "h-build"})
    assert typical_durations(tmp_path, tasks, {"build": "h-build"}) == {"build": 2.0}


def test_history_forgets_tasks_gone_from_the_file_so_generated_ids_do_not_pile_up(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.toml"
    for day in range(30):  # a nightly file whose task ids change every day
        save_durations(tmp_path, tasks, {f"fix-{day}": 1.0}, {f"fix-{day}": "h", "lint": "h-lint"})
    save_durations(tmp_path, tasks, {"lint": 2.0}, {"lint": "h-lint", "slow": "h-slow"})
    save_durations(tmp_path, tasks, {"slow": 9.0}, {"lint": "h-lint", "slow": "h-slow"})
    kept = json.loads(history_file(tmp_path, tasks).read_text())["tasks"]
    assert sorted(kept) == ["lint", "slow"]  # the 30 fix-N are gone; lint, not run last time, stays
    save_durations(tmp_path, tasks, {}, {"lint": "h-lint-edited", "slow": "h-slow"})
    assert sorted(json.loads(history_file(tmp_path, tasks).read_text())["tasks"]) == ["slow"]


def test_a_history_written_in_the_earlier_form_is_still_read(tmp_path: Path) -> None:
    """Before, each task was {"hash", "recent"}; now [hash, seconds...]: both read the same."""
    tasks_file = tmp_path / "tasks.toml"
    path = history_file(tmp_path, tasks_file)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"tasks_file": str(tasks_file),
                                "tasks": {"a": {"hash": "h1", "recent": [3.0, 1.0, 2.0]}}}))
    assert typical_durations(tmp_path, tasks_file, {"a": "h1"}) == {"a": 2.0}
    save_durations(tmp_path, tasks_file, {"a": 5.0}, {"a": "h1"})
    assert json.loads(path.read_text())["tasks"] == {"a": ["h1", 5.0, 3.0, 1.0]}  # the last 3
    assert read_history(path) == {"a": ("h1", [5.0, 3.0, 1.0])}
