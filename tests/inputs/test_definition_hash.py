"""A task's definition hash is the sha256 of json.dumps of its fields (sorted keys, no spaces),
whatever values TOML gave it: dates, floats, nested tables, text beyond ASCII. Older journals
hold these hashes, and resume matches tasks by them."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json

import pytest

from novaproc.inputs.taskfile import Task


def reference(task: Task) -> str:
    fields = {f.name: getattr(task, f.name) for f in dataclasses.fields(Task)
              if f.name not in ("description", "kind_reason")}
    for name in ("foreach", "template", "item", "executor"):
        if fields[name] is None:
            del fields[name]
    fields["env"] = sorted(fields["env"].items())
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"),
                      default=lambda v: v.isoformat())
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@pytest.mark.parametrize("task", [
    Task(id="a", cmd="true"),
    Task(id="b", cmd=("echo", "h\u00e9 \u2603", "\"q\"\\"), env={"Z": "1", "A": "\u00e9"}, timeout=1.5),
    Task(id="c", call="m:f", args=(1, 2.5, float("inf"), None, True, datetime.date(2024, 1, 2)),
         kwargs={"b": {"y": [1, {"z": datetime.datetime(2024, 1, 2, 3, 4, 5)}]}, "a": datetime.time(1, 2)}),
    Task(id="d.x", cmd="x {item}", template="d", item="x", executor="local", resources={"gpu": 2},
         writes=("a", "/b"), reads=("c",), depends_on=("a",), retries=3, cpu=2, cwd="s", isolation="none"),
    Task(id="e", cmd="x", foreach={"py": ("3.11", "3.12")}),
])
def test_the_hash_is_that_of_the_sorted_json(task):
    assert task.definition_hash() == reference(task)
