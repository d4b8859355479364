"""run.json as written by run_json: what the dataclasses hold, read back as they were."""

from __future__ import annotations

import json
from dataclasses import asdict

from novaproc.state.format import JOURNAL_VERSION, RunMeta, TaskMeta, run_json


def test_run_json_holds_what_asdict_gives_and_reads_back_as_it_was():
    tasks = tuple(TaskMeta(f"t{i}", f"échoes {{i}}, {{}} \"quoted\" {i}", "f" * 64, "shell", ("B", "A"))
                  for i in range(3))
    meta = RunMeta("/repo/tasks.toml", "/repo", tasks=tasks, description="three", argv=("run", "-j", "2"),
                   pid=123, pid_start=456, created=1.5)
    data = json.loads(run_json("abc123", meta))
    expected = {"novaproc_journal": JOURNAL_VERSION, "id": "abc123", **asdict(meta)}
    assert data == json.loads(json.dumps(expected))
    assert RunMeta.from_json(data) == meta
    assert json.loads(run_json("r", RunMeta("/x/t.toml", "/x")))["tasks"] == []
