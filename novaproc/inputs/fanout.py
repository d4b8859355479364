"""Fan-out: a task with `foreach` is a template, expanded into one task per item.

The items are a glob's files (tracked files in a repository, files on disk outside git), a list
of strings, or a matrix (one item per combination). Each expanded task is the template with its
placeholders filled (see `placeholders`), its paths normalised and checked like any declared
path, and the id `<template>.<slug>`: stable from run to run, so `resume` matches it.

Expansion runs at every load, after the cache of validated inputs (`cache`): a glob's files
change without the tasks file changing.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import itertools
import json
import math
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from novaproc.errors import ConfigError
from novaproc.inputs.foreach import TEMPLATE_FIELDS, texts
from novaproc.inputs.ids import valid_id
from novaproc.inputs.placeholders import Template, file_values
from novaproc.inputs.taskfile import Task, TaskFile, filled_paths, unchecked_task

MAX_TASKS = 100_000
_MAX_ID = 64
_SLUG = re.compile(r"[^A-Za-z0-9_.-]")
_HASH_CHARS = 10


def expand(taskfile: TaskFile, own: str | None = None) -> TaskFile:
    """`taskfile` with each template replaced by its tasks, and a template's id in `depends_on`
    by its tasks' ids. `own`: novaproc's state folder, whose files are never items."""
    if not any(t.foreach is not None for t in taskfile.tasks):
        return taskfile
    file, root = str(taskfile.path), str(taskfile.root)
    items: dict[str, list[tuple[str, dict[str, str]]]] = {}
    groups: dict[str, tuple[str, ...]] = {}
    for t in taskfile.tasks:
        if t.foreach is not None:
            items[t.id] = _items(file, t, root, taskfile.in_git, own)
            # a matrix's "-"-joined values may repeat ("x-y" + "z", "x" + "y-z"): hash all of them
            keys = [json.dumps(v) for _, v in items[t.id]] if isinstance(t.foreach, dict) else None
            groups[t.id] = tuple(expanded_ids(t.id, [text for text, _ in items[t.id]], keys))
            if sum(map(len, groups.values())) > MAX_TASKS:
                raise ConfigError(file, f"expands to more than {MAX_TASKS:,} tasks; split the work "
                                  "into several runs", task=t.id, field="foreach")
    tasks: list[Task] = []
    for t in taskfile.tasks:
        deps = tuple(i for d in t.depends_on for i in groups.get(d, (d,)))
        if t.foreach is not None:
            tasks += _filled(file, root, t, groups[t.id], items[t.id], deps)
        else:
            tasks.append(t if deps == t.depends_on else dataclasses.replace(t, depends_on=deps))
    _check_unique(file, tasks)
    _check_deps(file, tasks)
    return dataclasses.replace(taskfile, tasks=tuple(tasks), templates=groups,
                               hashes={t.id: t.definition_hash() for t in tasks})


def _filled(file: str, root: str, template: Task, ids: Sequence[str],
            items: Sequence[tuple[str, dict[str, str]]], deps: tuple[str, ...]) -> list[Task]:
    fill = _Filler(template)
    # the paths of many items are the same (a folder, or none filled in): each spelling is
    # checked once, at the first item that has it, which is where its error would be raised
    checked: dict[tuple[Any, ...], dict[str, Any]] = {}
    tasks = []
    for tid, (text, values) in zip(ids, items, strict=True):
        fields = fill(values)
        declared = (fields["writes"], fields["reads"], fields["cwd"])
        normal = checked.get(declared)
        if normal is None:
            normal = checked[declared] = filled_paths(file, root, f"{tid} (item {text!r})",
                                                      {"writes": declared[0], "reads": declared[1],
                                                       "cwd": declared[2]})
        fields.update(normal)
        tasks.append(_copy(template, **fields, id=tid, foreach=None, template=template.id, item=text,
                           depends_on=deps))
    return tasks


def _copy(original: Task, **changes: Any) -> Task:
    """dataclasses.replace without the frozen __init__'s checked setattr of every field, which
    was a third of expanding 100,000 items. The values are the template's, already validated."""
    return unchecked_task({**original.__dict__, **changes})


def _items(file: str, template: Task, root: str, in_git: bool,
           own: str | None) -> list[tuple[str, dict[str, str]]]:
    foreach = template.foreach
    count = math.prod(map(len, foreach.values())) if isinstance(foreach, dict) else 0
    if count > MAX_TASKS:  # checked before making them: a matrix's product grows fast
        raise ConfigError(file, f"makes {count:,} combinations, more than the {MAX_TASKS:,} tasks a run "
                          "takes; split the work into several runs", task=template.id, field="foreach")
    if isinstance(foreach, dict):
        keys = list(foreach)
        return [("-".join(combo), {"item": "-".join(combo), **dict(zip(keys, combo, strict=True))})
                for combo in itertools.product(*foreach.values())]
    if isinstance(foreach, str):
        found = match_files(foreach, root, in_git, own)
        if not found:
            where = "no file tracked by git in" if in_git else "no file in"
            raise ConfigError(file, f"glob {foreach!r} matches {where} {root}", task=template.id,
                              field="foreach")
        foreach = tuple(found)
    if len(foreach) > MAX_TASKS:
        raise ConfigError(file, f"has {len(foreach):,} items, more than the {MAX_TASKS:,} a run takes; "
                          "split the work into several runs", task=template.id, field="foreach")
    return [(item, file_values(item)) for item in foreach]


def match_files(pattern: str, root: str, in_git: bool, own: str | None = None) -> list[str]:
    """The files matching a glob, sorted: `*` stays in a folder, `**` crosses folders. Relative
    patterns match the repository's tracked files (in git) or the files under `root`; an
    absolute pattern matches files on disk: absolute items, but relative ones under `root` (a
    task works on its worktree's copy of a file, never on the checkout's). Files on disk under
    `own` (novaproc's state folder: its journals) are no items."""
    mine = os.path.realpath(own) + os.sep if own else None

    def on_disk(found: list[str], base: str) -> list[str]:
        return sorted(p for p in found if os.path.isfile(full := os.path.join(base, p))
                      and not (mine and os.path.realpath(full).startswith(mine)))

    if os.path.isabs(pattern):
        inside = root.rstrip("/") + "/"
        found = glob.glob(pattern, recursive=True, include_hidden=True)
        return [p.removeprefix(inside) for p in on_disk(found, "/")]
    if not in_git:
        return on_disk(glob.glob(pattern, root_dir=root, recursive=True, include_hidden=True), root)
    import subprocess  # not at the top: only a glob's items in a repository need it (~2 ms for `plan`)

    listed = subprocess.run(["git", "-c", "core.quotePath=false", "ls-files", "-z", "--",
                             f":(glob){pattern}"], cwd=root, capture_output=True, check=False)
    if listed.returncode != 0:
        problem = listed.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["failed"]
        raise ConfigError(pattern, f"git ls-files in {root}: {problem[0]}")
    return sorted({p for p in os.fsdecode(listed.stdout).split("\0") if p})


def expanded_ids(template: str, items: Sequence[str], keys: Sequence[str] | None = None) -> list[str]:
    """`<template>.<slug>` for each item: characters outside [A-Za-z0-9_.-] become `_`. An id too
    long, not valid, or shared (ignoring case) with another item's gets a hash of its key (the
    item, or what tells a matrix's combinations apart), so it stays the same whatever other
    items there are."""
    plain = [f"{template}.{_SLUG.sub('_', item)}" for item in items]
    counts = Counter(p.lower() for p in plain)
    unique = [len(p) <= _MAX_ID and counts[p.lower()] == 1 and valid_id(p) for p in plain]
    return [p if ok else _hashed(template, item, key)
            for item, key, p, ok in zip(items, keys or items, plain, unique, strict=True)]


def _hashed(template: str, item: str, key: str) -> str:
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:_HASH_CHARS]
    room = _MAX_ID - len(template) - 2 - _HASH_CHARS
    cut = re.sub(r"\.(?=\.)", "_", _SLUG.sub("_", item)[:room]).lstrip(".")
    return f"{template}.{cut}-{digest}" if cut else f"{template}.{digest}"


def _check_unique(file: str, tasks: Sequence[Task]) -> None:
    seen: dict[str, Task] = {}
    for t in tasks:
        other = seen.setdefault(t.id.lower(), t)
        if other is not t:
            raise ConfigError(file, f"{_origin(t)} and {_origin(other)} have one id (ignoring case); "
                              "rename the task, or the template", task=t.id)


def _check_deps(file: str, tasks: Sequence[Task]) -> None:
    """A dependency on one task of a template (`fmt.src_a.py`) names a task that exists."""
    ids = {t.id for t in tasks}
    for t in tasks:
        for dep in t.depends_on:
            if dep not in ids:
                from novaproc.errors import did_you_mean

                raise ConfigError(file, f"unknown task {dep!r}{did_you_mean(dep, ids)}", task=t.id,
                                  field="depends_on")


def _origin(task: Task) -> str:
    return f"item {task.item!r} of {task.template!r}" if task.template else f'[tasks."{task.id}"]'


class _Filler:
    """A template's strings parsed once; called with an item's values, the fields to replace."""

    def __init__(self, template: Task) -> None:
        self.template = template
        self.parsed: dict[str, Template] = {}
        # a field with no placeholder keeps the template's value: 10,000 items fill only the rest
        self.filled = [name for name in TEMPLATE_FIELDS  # {{ and }} count: they become { and }
                       if any(self._parse(s).parts != (s,) for s in texts(getattr(template, name)))]
        self.kept = {name: getattr(template, name) for name in ("writes", "reads", "cwd")}

    def __call__(self, values: Mapping[str, str]) -> dict[str, Any]:
        t = self.template
        fields: dict[str, Any] = {"cmd": self._cmd(t.cmd, values)} if t.cmd is not None else {}
        fields |= self.kept  # the paths are checked task by task, filled or not
        for name in self.filled:
            fields[name] = self._fill(getattr(t, name), values)
        return fields

    def _cmd(self, cmd: str | tuple[str, ...], values: Mapping[str, str]) -> str | tuple[str, ...]:
        if isinstance(cmd, str):  # the shell reads it: each value one quoted word
            return self._parse(cmd).fill(values, quote=True)
        return tuple(self._parse(arg).fill(values) for arg in cmd)

    def _fill(self, value: Any, values: Mapping[str, str]) -> Any:
        if isinstance(value, str):
            return self._parse(value).fill(values)
        if isinstance(value, tuple | list):
            return type(value)(self._fill(v, values) for v in value)
        if isinstance(value, dict):
            return {k: self._fill(v, values) for k, v in value.items()}
        return value

    def _parse(self, text: str) -> Template:
        parsed = self.parsed.get(text)
        if parsed is None:
            parsed = self.parsed[text] = Template.parse(text)
        return parsed
