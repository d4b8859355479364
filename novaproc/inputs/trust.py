"""What a tasks file and its settings may not do, whatever types they pass: strings with a NUL
byte (no program, path or environment can hold one), environment names that cannot be set, and
paths that climb or resolve (through a symlink) out of the repository.

`check_strings` runs on the raw TOML, before validation; `check_paths` on the loaded result,
at every run (a symlink can appear after the file was read and cached).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

from novaproc.errors import ConfigError
from novaproc.inputs import paths

RESOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # docker, gpu.large


def check_strings(file: str, data: dict[str, Any]) -> None:
    """No string anywhere in the file, keys included, holds a NUL byte; ConfigError names the
    task and field."""
    for where, value in _strings(data):
        if "\0" in value:
            in_task = where[:1] == ("tasks",) and len(where) > 1
            task, field = (where[1], ".".join(where[2:3])) if in_task else (None, ".".join(where))
            raise ConfigError(file, f"holds a NUL byte ({value!r}); no command, path or variable can",
                              task=task, field=field or None)


def _strings(value: Any, where: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """(the keys that lead to it, string) for every string and key in `value`."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield (*where, key), key
            yield from _strings(item, (*where, key))
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, where)


def check_env_names(file: str, task: str, env: object) -> None:
    """Names of `env` that a process environment can hold: not empty, no '='."""
    for name in env if isinstance(env, dict) else ():
        if not name or "=" in name:
            raise ConfigError(file, f"invalid variable name {name!r}: a name is not empty and holds "
                              "no '='", task=task, field="env")


def check_resource_names(file: str, names: object, task: str | None = None) -> None:
    """Names of resources (a task's, or capacities in [resources]) a lock can be taken on."""
    for name in names if isinstance(names, list | dict) else ():
        if not (isinstance(name, str) and RESOURCE_NAME.fullmatch(name)):
            raise ConfigError(file, f"invalid resource name {name!r}: names are 1-64 ASCII letters, "
                              "digits, '_', '.', '-', starting with a letter or digit", task=task,
                              field="resources")


def climbs(declared: str) -> bool:
    """A '..' in the pattern part of a glob (after its first wildcard), which no normalising
    can check: `*/../../etc` may match anything. Before it, paths.normalize checks a '..'."""
    if not paths.has_glob(declared):  # most paths: no pattern part at all
        return False
    parts = declared.split("/")
    wild = next((i for i, part in enumerate(parts) if paths.GLOB_CHARS & set(part)), len(parts))
    return ".." in parts[wild:]


def outside(entry: str) -> bool:
    """A worktree_include entry that is empty, absolute or climbs out of the repository."""
    try:
        return not entry.strip("/") or entry.startswith("/") or climbs(entry) \
            or paths.normalize(entry, "/") == ".."
    except paths.PathEscapes:
        return True


def escapes(normalized: str, root: Path) -> str | None:
    """Where a repository-relative path really leads when a symlink on its way takes it out of
    `root`; None when it stays inside (or is absolute: shared files name outside paths)."""
    return _Leads(str(root))(normalized)


class _Leads:
    """`escapes` for many paths of one repository, with what the disk says of each folder kept:
    100,000 tasks name thousands of files in few folders. A folder that is no folder on disk
    (yet) holds no symlink, so its files need no lstat of their own; a plain name in a folder
    that stays in the repository stays in it too, unless it is a symlink."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)
        self.folders: dict[str, tuple[str, bool, bool]] = {}  # -> (realpath, a folder there, inside)

    def __call__(self, normalized: str) -> str | None:
        if os.path.isabs(normalized):
            return None
        folder, _, name = normalized.rpartition("/")
        known = self.folders.get(folder)
        if known is None:
            real_folder = os.path.realpath(os.path.join(self.root, folder))
            known = (real_folder, os.path.isdir(real_folder), self._inside(real_folder))
            self.folders[folder] = known
        real_folder, is_dir, inside = known
        real = os.path.join(real_folder, name)
        link = is_dir and os.path.islink(real)  # nothing on disk there: no link either
        if inside and not link and name not in ("", ".", ".."):
            return None  # a plain name stays in a folder that stays in the repository
        if link:
            real = os.path.realpath(real)
        real = os.path.normpath(real)
        return None if self._inside(real) else real

    def _inside(self, real: str) -> bool:
        return real == self.real_root or real.startswith(self.real_root + os.sep)


def check_paths(file: str, root: Path, tasks: Sequence[Any], include: tuple[str, ...]) -> None:
    """No declared path, cwd or worktree_include entry leads out of the repository through a
    symlink. ConfigError (exit 2) names the task and field."""
    leads = _Leads(str(root))
    # each path once (100,000 tasks name far fewer), then the first task naming a bad one
    named = {*chain.from_iterable(t.writes for t in tasks), *chain.from_iterable(t.reads for t in tasks),
             *(t.cwd for t in tasks if t.cwd)}
    bad = {declared: real for declared in named if (real := leads(declared)) is not None}
    for task in tasks if bad else ():
        for field, declared in (*(("writes", p) for p in task.writes), *(("reads", p) for p in task.reads),
                                *((("cwd", task.cwd),) if task.cwd else ())):
            if declared in bad:
                raise ConfigError(file, f"{declared!r} leads out of the repository {root} (to "
                                  f"{bad[declared]}, through a symlink); name a path inside it, or the "
                                  "outside one as an absolute path", task=task.id, field=field)
    for entry in include:
        if (real := leads(paths.fixed_prefix(entry.strip("/")) or ".")) is not None:
            raise ConfigError(file, f"worktree_include {entry!r} leads out of the repository {root} "
                              f"(to {real}, through a symlink)", field="worktree_include")
