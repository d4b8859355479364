"""The one tasks-file builder: TOML text for [run] and [tasks.<id>] tables, and write_tasks."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from pathlib import Path

# no CPU/memory throttle: a busy CI machine must not hold tasks back; short kill grace and
# retry delay
NO_THROTTLE: dict[str, object] = {"cpu_limit": 100, "memory_limit": 100, "kill_grace": 1,
                                  "retry_delay": 0.2}


def toml_value(value: object) -> str:
    """A TOML value: strings, numbers, booleans and lists as JSON writes them, tables inline."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def run_table(**settings: object) -> str:
    """A [run] table, left open (the text may go on with more of its keys)."""
    return "[run]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in settings.items())


# "[run]\ncpu_limit = 100\nmemory_limit = 100\nkill_grace = 1\nretry_delay = 0.2\n"
RUN_TABLE = run_table(**NO_THROTTLE)


def task(tid: str, cmd: str | list[str] | None = None, **fields: object) -> str:
    """One [tasks.<tid>] table and a blank line; `cmd` first, then the fields, as TOML values.
    `tid` goes in as it is written (a key that needs quotes comes quoted)."""
    if cmd is not None:
        fields = {"cmd": cmd, **fields}
    lines = [f"[tasks.{tid}]", *(f"{k} = {toml_value(v)}" for k, v in fields.items())]
    return "\n".join(lines) + "\n\n"


def call_task(tid: str, target: str, **fields: object) -> str:
    """A task that calls the Python function `target` ("module:function")."""
    return task(tid, call=target, **fields)


def tasks_toml(tasks: Mapping[str, Mapping[str, object]], **run: object) -> str:
    """A tasks file: [run] (NO_THROTTLE overridden by `run`), then one table per task."""
    return run_table(**{**NO_THROTTLE, **run}) + "\n" + "".join(
        task(json.dumps(tid), **fields) for tid, fields in tasks.items())


def write_tasks(folder: Path, tasks: str | Mapping[str, Mapping[str, object]],
                name: str = "tasks.toml") -> Path:
    """Write a tasks file to folder/name and return its path: `tasks` is either its text (dedented)
    or the tasks as a mapping (see tasks_toml)."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(tasks) if isinstance(tasks, str) else tasks_toml(tasks))
    return path
