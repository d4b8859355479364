"""clean --runs: journals of runs that ended more than keep_runs ago go, with the tasks files
`each` wrote that no kept run uses; recent runs stay."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from support.cli import run_cli
from support.tasks import tasks_toml, write_tasks

DAY = 86400.0


def _age(run: Path, days: float) -> None:
    """Make a run look as if it was made and ended `days` ago (the times of its journal)."""
    shift = days * DAY
    events = run / "events.jsonl"
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    for record in lines:
        for key in ("time", "created"):
            if key in record:
                record[key] -= shift
    events.write_text("".join(json.dumps(r) + "\n" for r in lines))
    meta = json.loads((run / "run.json").read_text())
    meta["created"] -= shift
    (run / "run.json").write_text(json.dumps(meta))


def test_clean_runs_removes_old_runs_and_keeps_recent_ones(tmp_path: Path) -> None:
    work, state = tmp_path / "work", tmp_path / "state"
    write_tasks(work, tasks_toml({"a": {"cmd": "true"}}, isolation="none"))
    (work / "nova.toml").write_text('keep_runs = "7d"\n')
    env = {"NOVA_STATE_DIR": str(state)}
    old = run_cli("each", "--background", "--", "true", ":::", "x", cwd=work, env=env).stdout.strip()
    new = run_cli("run", "--background", work / "tasks.toml", cwd=work, env=env).stdout.strip()
    for run_id in (old, new):
        assert run_cli("wait", run_id, cwd=work, env=env).returncode == 0
    _age(state / "runs" / old, 8)
    written = next((state / "each").glob("*.toml"))
    os.utime(written, (time.time() - 8 * DAY,) * 2)

    cleaned = run_cli("clean", "--runs", cwd=work, env=env)

    assert cleaned.returncode == 0, cleaned.stderr
    assert cleaned.stdout.splitlines() == [f"removed run {old}"]
    assert [p.name for p in (state / "runs").iterdir()] == [new]
    assert not written.exists()  # the tasks file of the removed each run went with it
    assert run_cli("status", new, cwd=work, env=env).returncode == 0
    assert run_cli("status", old, cwd=tmp_path, env=env).returncode == 2  # gone from the index too
