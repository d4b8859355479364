"""The validated inputs of a run (tasks file and settings), cached by all they derive from.

Validating needs pydantic, whose import and validators cost about 0.14 s here: half of what
`novaproc run` spent before its first task. Most runs read a file they read before (cron, a
script run again), so the result of a validation is kept, one pickle per key, in

    $XDG_CACHE_HOME/novaproc/inputs/<key>.pickle      (default ~/.cache/novaproc/...)

The key covers everything the result depends on: the novaproc code that builds it (every module
of its folder), the tasks file's path and bytes, the repository it lies in, nova.toml's (or
--config's) bytes, the NOVA_* variables and the flags. Any change is a miss, and a miss is the
first reading again. Only a valid result is stored, so every error comes from a fresh
validation. An entry that cannot be read, or that another user could have written, is a miss; a
cache that cannot be written is no cache. The newest MAX_ENTRIES entries are kept.

Beside an entry read again, `remember` keeps what others derive from its tasks alone (the plan's
graph and conflicts, 0.4 s of 100,000 tasks), keyed also by the code that derives it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import operator
import os
import pickle
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from novaproc.errors import ConfigError
from novaproc.fsio import write_atomic
from novaproc.inputs import paths
from novaproc.inputs.bulk import collector_paused
from novaproc.inputs.fanout import expand
from novaproc.inputs.settings import ENV_KEYS, Settings, load_settings
from novaproc.inputs.taskfile import ROW_FIELDS, TaskFile, load_tasks, tasks_of_rows
from novaproc.inputs.tomlfile import MAX_FILE_BYTES, read_toml
from novaproc.inputs.trust import check_paths

MAX_ENTRIES = 64
T = TypeVar("T")


def load_inputs(tasks_path: Path, *, config_file: Path | None = None,
                flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None,
                root: Path | None = None) -> tuple[TaskFile, Settings]:
    """The tasks file and settings, as `load_tasks` and `load_settings` give them, with the
    fan-out templates expanded."""
    with collector_paused():
        return _load_inputs(tasks_path, config_file, flags, environ, root)


def _load_inputs(tasks_path: Path, config_file: Path | None, flags: Mapping[str, Any] | None,
                 environ: Mapping[str, str] | None, root: Path | None) -> tuple[TaskFile, Settings]:
    flags = {k: v for k, v in (flags or {}).items() if v is not None}  # None: not given
    environ = os.environ if environ is None else environ
    entry = _entry(tasks_path, config_file, flags, environ, root)
    if entry is not None and (cached := _read(entry)) is not None:
        taskfile = _with_env_values(cached[0])
        if taskfile is not None:
            return _expanded(taskfile, cached[1], entry)
    taskfile = load_tasks(tasks_path, root)
    settings = load_settings(taskfile.root, taskfile.run_table, tasks_file=str(tasks_path),
                             config_file=config_file, environ=environ, flags=flags)
    if _expansion_is_the_files(taskfile):  # kept expanded: 100,000 items are not filled again
        taskfile = expand(taskfile, str(settings.state_path(taskfile.root)))
    if entry is not None:
        _write(entry, (_without_env_values(taskfile), settings))
    # nothing kept beside it yet: a first reading is slow enough, and most files are read once
    return _expanded(taskfile, settings, None)


def _expansion_is_the_files(taskfile: TaskFile) -> bool:
    """Whether the expanded tasks depend on the tasks file alone: no template takes its items from
    a glob (whose files change without the file changing) or sets `env` (whose values, filled per
    item, are never stored)."""
    return all(t.foreach is None or (not isinstance(t.foreach, str) and not t.env) for t in taskfile.tasks)


def _expanded(taskfile: TaskFile, settings: Settings, entry: Path | None) -> tuple[TaskFile, Settings]:
    """The templates left (a glob's, or ones with `env`) are expanded at every run, never from
    the cache, and symlinks read (one may appear at any time)."""
    if entry is not None and _expansion_is_the_files(taskfile):  # its tasks are the entry's
        taskfile = dataclasses.replace(taskfile, cache_entry=entry)
    taskfile = expand(taskfile, str(settings.state_path(taskfile.root)))
    check_paths(str(taskfile.path), taskfile.root, taskfile.tasks, settings.worktree_include)
    return taskfile, settings


# Values of `env` may be secrets, and never reach the disk: an entry keeps their names, and a
# hit takes the values from the tasks file again (its bytes are in the key, so they are the
# values validated). Reading the TOML costs milliseconds; validating it again, 0.14 s.

def _without_env_values(taskfile: TaskFile) -> TaskFile:
    tasks = tuple(dataclasses.replace(t, env=dict.fromkeys(t.env, "")) if t.env else t
                  for t in taskfile.tasks)
    return dataclasses.replace(taskfile, tasks=tasks)


def _with_env_values(taskfile: TaskFile) -> TaskFile | None:
    """`taskfile` from the cache with its env values read again; None when they cannot be."""
    if not any(t.env for t in taskfile.tasks):
        return taskfile
    try:
        tables = read_toml(taskfile.path, str(taskfile.path))["tasks"]
        tasks = tuple(dataclasses.replace(t, env={k: tables[t.id]["env"][k] for k in t.env}) if t.env else t
                      for t in taskfile.tasks)
    except (ConfigError, KeyError, TypeError):
        return None  # changed since it was keyed: read it afresh
    return dataclasses.replace(taskfile, tasks=tasks)


def cache_dir(environ: Mapping[str, str]) -> Path | None:
    base = environ.get("XDG_CACHE_HOME") or ""
    if not os.path.isabs(base):  # the XDG rule: a relative value is ignored
        home = environ.get("HOME")
        if not home:
            return None
        base = os.path.join(home, ".cache")
    return Path(base, "novaproc", "inputs")


def _entry(tasks_path: Path, config_file: Path | None, flags: Mapping[str, Any],
           environ: Mapping[str, str], given_root: Path | None) -> Path | None:
    """The cache file for these inputs, or None when they cannot be keyed (an unreadable
    tasks file: its reading reports why)."""
    folder = cache_dir(environ)
    if folder is None:
        return None
    try:
        path = tasks_path.resolve()
        body = _read_bytes(path)
        root, in_git = paths.find_root(given_root or path.parent)
        nova = config_file.resolve() if config_file is not None else root / "nova.toml"
        nova_body = _read_bytes(nova) if config_file is not None or nova.is_file() else b""
        code = code_stamp(code_files())
    except OSError:
        return None
    digest = hashlib.sha256()
    for part in (path, root, in_git, nova, sorted(flags.items()),
                 [(var, environ.get(var)) for var in ENV_KEYS], code):
        digest.update(repr(part).encode() + b"\0")
    for blob in (body, nova_body):
        digest.update(hashlib.sha256(blob).digest())
    return folder / f"{digest.hexdigest()[:32]}.pickle"


def code_files(folder: Path = Path(__file__).parent) -> list[Path]:
    """The modules of `folder`; by default those whose code decides what a tasks file and
    settings become: every one beside this module, so a new one is covered without a list to keep."""
    return sorted(folder.glob("*.py"))


def code_stamp(files: Sequence[Path]) -> list[tuple[str, int, int, int]]:
    """What tells a version of `files` from another, without reading them (OSError if one is gone)."""
    return [(str(f), s.st_mtime_ns, s.st_size, s.st_ino) for f in files for s in [os.stat(f)]]


def _read_bytes(path: Path) -> bytes:
    if not stat.S_ISREG(path.stat().st_mode):
        raise OSError("not a regular file")  # a FIFO would hang: let the full reading report it
    with path.open("rb") as f:
        body = f.read(MAX_FILE_BYTES + 1)
    if len(body) > MAX_FILE_BYTES:
        raise OSError("too big to key")  # let the full reading report it
    return body


def remember(taskfile: TaskFile, name: str, make: Callable[[], T], *, code: Sequence[Path] = ()) -> T:
    """What `make` derives from the tasks of `taskfile` and its root alone, kept under `name`
    beside their cache entry and keyed also by the `code` (files) that derives it; made afresh
    when there is no entry to keep it by, or what was kept is not of this code."""
    if taskfile.cache_entry is None:
        return make()
    try:
        stamp = code_stamp(code)
    except OSError:
        return make()
    kept = taskfile.cache_entry.with_suffix(f".{name}.pickle")
    value = _load(kept)
    if isinstance(value, tuple) and len(value) == 2 and value[0] == stamp:
        return value[1]  # type: ignore[no-any-return]
    made = make()
    with contextlib.suppress(Exception):  # a value pickle refuses is only not kept
        _store(kept, pickle.dumps((stamp, made), protocol=pickle.HIGHEST_PROTOCOL))
    return made


def _load(path: Path) -> Any:
    """What was pickled at `path`, if we wrote it; None when there is nothing to read."""
    try:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                return None  # only what we wrote ourselves is unpickled
            value = pickle.load(f)
        os.utime(path)  # recently used: kept longest
    except Exception:  # missing, damaged, or from an older layout of the classes
        return None
    return value


def _store(path: Path, blob: bytes) -> None:
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, blob, durable=False, mode=0o600)  # a lost entry is only a miss
        _prune(path.parent)


def _read(entry: Path) -> tuple[TaskFile, Settings] | None:
    value = _load(entry)
    try:
        shell, names, rows, settings = value
        if not (isinstance(shell, TaskFile) and isinstance(settings, Settings) and names == _FIELDS):
            return None  # another layout of the classes
        tasks = tasks_of_rows(rows)  # in the order of `names`, which is _FIELDS
    except Exception:  # missing, damaged, or from an older layout of the classes
        return None
    return dataclasses.replace(shell, tasks=tasks), settings


def _write(entry: Path, value: tuple[TaskFile, Settings]) -> None:
    taskfile, settings = value
    # a row of values a task: pickling 100,000 objects, their field names each time, took 2.4
    # times as long to read back
    rows = list(map(_ROW, taskfile.tasks))
    try:
        blob = pickle.dumps((dataclasses.replace(taskfile, tasks=()), _FIELDS, rows, settings),
                            protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # a value TOML allows but pickle does not: no cache for this file
        return
    _store(entry, blob)


_FIELDS = ROW_FIELDS  # written in the order tasks_of_rows reads
_ROW = operator.attrgetter(*_FIELDS)  # a task's values in that order, as one tuple


def _prune(folder: Path) -> None:
    entries = list(folder.glob("*.pickle"))
    if len(entries) <= MAX_ENTRIES:
        return
    entries.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[MAX_ENTRIES:]:
        with contextlib.suppress(OSError):
            old.unlink()
