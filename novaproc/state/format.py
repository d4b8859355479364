"""The run journal's format, shared by its one writer (journal.py) and its readers (runs.py):

    <state_dir>/runs/<id>/run.json        the run's record (RunMeta), replaced atomically
                         events.jsonl     version header, then one JSON event per line, append-only
                         logs/<task>.log  each task's output, its attempts appended

A torn last line (a crash while it was written) is dropped, never guessed; damage anywhere
else is JournalCorrupt. Whether the writer still lives is read from /proc, pid and start time.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from novaproc.errors import EnvironmentFault, UsageError
from novaproc.inputs.ids import TASK_ID

JOURNAL_VERSION = 1
RUN_FILE, EVENTS_FILE, LOGS_DIR = "run.json", "events.jsonl", "logs"


class JournalCorrupt(EnvironmentFault):
    """A journal damaged somewhere other than its last line: not a crash, so nothing is guessed."""

    def __init__(self, path: Path, line: int, problem: str) -> None:
        super().__init__(f"{path}: line {line}: {problem}; the journal is damaged (not merely cut "
                         "short by a crash); move its run folder away to ignore it")


@dataclass(frozen=True, slots=True)
class TaskMeta:
    """A task as the run declared it. `env` holds variable names only: values are never recorded."""

    id: str
    description: str = ""
    hash: str = ""
    kind: str = ""
    env: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", tuple(sorted(self.env)))  # a mapping keeps only its names


@dataclass(frozen=True, slots=True)
class RunMeta:
    """What a run is: kept in run.json. `pid_start` is filled in from /proc when left None."""

    tasks_file: str
    root: str
    tasks: tuple[TaskMeta, ...] = ()
    description: str = ""
    argv: tuple[str, ...] = ()
    pid: int = field(default_factory=os.getpid)
    pid_start: int | None = None
    created: float = field(default_factory=time.time)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunMeta:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        tasks = tuple(TaskMeta(**{k: t[k] for k in TaskMeta.__dataclass_fields__ if k in t})
                      for t in fields.pop("tasks", ()))
        argv = tuple(fields.pop("argv", ()))
        return cls(**fields, tasks=tasks, argv=argv)


def task_log_path(folder: Path, task_id: str) -> Path:
    if not TASK_ID.fullmatch(task_id):
        raise UsageError(f"{task_id!r} is not a task id")
    return folder / LOGS_DIR / f"{task_id}.log"


def process_start_time(pid: int) -> int | None:
    """When process `pid` started (clock ticks after boot, /proc/<pid>/stat field 22).

    None when there is no such process, or it is a zombie: it will never write again.
    """
    if pid <= 0:
        return None
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        fields = text[text.rindex(")") + 2:].split()  # the name in (...) may hold spaces
        return None if fields[0] in ("Z", "X") else int(fields[19])
    except (OSError, ValueError, IndexError):  # gone, or gone while being read
        return None


def supervisor_alive(meta: RunMeta) -> bool:
    """The recorded supervisor still runs: same pid AND same start time (pids are reused)."""
    start = process_start_time(meta.pid)
    return start is not None and (meta.pid_start is None or start == meta.pid_start)


def meta_fields(meta: RunMeta) -> dict[str, Any]:
    """The run's fields but its tasks (plain values all)."""
    return {name: getattr(meta, name) for name in meta.__dataclass_fields__ if name != "tasks"}


def run_json(run_id: str, meta: RunMeta) -> str:
    """run.json: the run's fields a line each, its tasks on one line after them. Built directly
    and the tasks written by json's C encoder (which `indent` turns off): `asdict` and an
    indented dump of 100,000 tasks took 0.77 s of a run's start, this 0.15 s."""
    head = {"novaproc_journal": JOURNAL_VERSION, "id": run_id, **meta_fields(meta)}
    text = json.dumps(head, indent=1)
    tasks = json.dumps([task_json(t) for t in meta.tasks], separators=(",", ":"))
    return f'{text[:-2]},\n "tasks": {tasks}\n}}'


def json_pieces(items: Iterable[Any], *, pairs: bool = False, chunk: int = 1000) -> Iterator[str]:
    """`items` as one JSON array (or, `pairs`, an object of (key, value) pairs), made a chunk at
    a time by json's C encoder, for `write_atomic` to write as it goes: a run's summary or
    durations built whole, then as text, then as bytes, were its peak memory (some 90 MB at
    100,000 tasks)."""
    items = iter(items)
    yield "{" if pairs else "["
    first = True
    while block := list(itertools.islice(items, chunk)):
        text = json.dumps(dict(block) if pairs else block, default=str, separators=(",", ":"))
        yield ("" if first else ",") + text[1:-1]
        first = False
    yield "}" if pairs else "]"


def task_json(task: TaskMeta) -> dict[str, Any]:
    """A declared task as run.json and the journal hold it (what `asdict` gives, faster)."""
    return {"id": task.id, "description": task.description, "hash": task.hash, "kind": task.kind,
            "env": list(task.env)}



def read_meta(path: Path) -> RunMeta:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        version = data.get("novaproc_journal", 0)
        if version > JOURNAL_VERSION:
            raise EnvironmentFault(f"{path} was written by a newer novaproc (version {version}); upgrade")
        return RunMeta.from_json(data)
    except FileNotFoundError:
        raise EnvironmentFault(f"{path.parent}: not a run (no {path.name})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError,
            AttributeError) as e:
        raise EnvironmentFault(f"{path}: unreadable run record ({e!r})") from None


class Parsed(NamedTuple):
    events: list[tuple[int, dict[str, Any]]]  # (line number, event), header excluded
    good_end: int  # bytes up to the end of the last whole line
    unterminated: bool  # the last whole line lacks its newline
    torn: int  # bytes of a torn last line, dropped


def parse_events(path: Path) -> Parsed:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Parsed([], 0, False, 0)
    except OSError as e:
        raise EnvironmentFault(f"cannot read {path}: {e.strerror}") from None
    lines = raw.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    events = [(n, _parse_line(path, n, line)) for n, line in enumerate(lines, 1)]
    good_end, unterminated, torn = len(raw) - len(tail), False, 0
    if tail:
        try:
            events.append((len(lines) + 1, _parse_line(path, len(lines) + 1, tail)))
            good_end, unterminated = len(raw), True
        except JournalCorrupt:
            torn = len(tail)
    if events:
        _check_header(path, events.pop(0)[1])
    return Parsed(events, good_end, unterminated, torn)


def _parse_line(path: Path, number: int, line: bytes) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise JournalCorrupt(path, number, f"not JSON ({e})") from None
    if not isinstance(value, dict) or not (number == 1 or isinstance(value.get("event"), str)):
        raise JournalCorrupt(path, number, "not a journal event")
    return value


def _check_header(path: Path, header: dict[str, Any]) -> None:
    version = header.get("novaproc_journal")
    if not isinstance(version, int):
        raise JournalCorrupt(path, 1, "no journal header")
    if version > JOURNAL_VERSION:
        raise EnvironmentFault(f"{path}: journal version {version} was written by a newer novaproc "
                               f"(this one reads version {JOURNAL_VERSION}); upgrade novaproc")
