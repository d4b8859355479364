"""The tasks file: TOML on disk to typed, frozen, validated models.

`load_tasks` is the only entry point; every problem becomes one ConfigError naming the
file, the task and the field. Checks that need the whole graph (cycles) live in `graph`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from novaproc.errors import ConfigError, did_you_mean
from novaproc.inputs import paths
from novaproc.inputs.durations import parse_duration
from novaproc.inputs.foreach import check_foreach, check_placeholders
from novaproc.inputs.ids import valid_id
from novaproc.inputs.kinds import Kind, detect
from novaproc.inputs.plain import plainly_valid
from novaproc.inputs.tomlfile import MAX_FILE_BYTES as MAX_FILE_BYTES  # a tasks file's size limit
from novaproc.inputs.tomlfile import read_toml
from novaproc.inputs.trust import check_env_names, check_resource_names, climbs

if TYPE_CHECKING:  # constraint names, evaluated by `schema` alone (see its docstring)
    from annotated_types import Ge, Le

    from novaproc.inputs.schema import Invalid, Lax

CALL_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


@dataclass(frozen=True)
class Task:
    """One task as declared; `id` comes from its table name. Built by `load_tasks` (through
    `schema.validate`), or from the cache of validated inputs."""

    id: str
    cmd: str | tuple[str, ...] | None = None
    call: str | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    description: str = ""
    depends_on: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    resources: dict[str, int] = dataclasses.field(default_factory=dict)
    kind: Annotated[Kind, Lax] = Kind.AUTO
    kind_reason: str = ""
    isolation: Literal["worktree", "none"] | None = None
    timeout: float | None = None
    retries: Annotated[int, Ge(0), Le(100)] = 0
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    cwd: str | None = None
    cpu: Annotated[int, Ge(1)] = 1
    allow_failure: bool = False
    executor: Literal["local", "dask"] | None = None  # "local" pins it to this machine on a cluster
    # a template's items (see `fanout`); an expanded task names its template and item
    foreach: str | tuple[str, ...] | dict[str, tuple[str, ...]] | None = None
    template: str | None = None
    item: str | None = None

    @property
    def label(self) -> str:
        return self.description or self.id

    def definition_hash(self) -> str:
        """A short hash of what the task does, to match it across runs (never its position)."""
        fields = dict(self.__dict__)  # every field; not asdict, 10x slower
        del fields["description"], fields["kind_reason"]
        for name in ("foreach", "template", "item", "executor"):  # fields added later: an unset one is left
            if fields[name] is None:                  # out, so older journals' hashes still match
                del fields[name]
        fields["env"] = sorted(fields["env"].items())
        blob = _ENCODE(fields)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# what json.dumps(sort_keys=True, ...) builds at every call, built once: 100,000 tasks are hashed
_HASH_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=lambda v: _json_value(v))


def _json_encoder() -> Callable[[object], str]:
    """_HASH_ENCODER.encode of a dict, by the C encoder it would make at each call made once, and
    without its check for circular references (a table read from TOML cannot hold itself): a
    third less time for each of 100,000 hashes."""
    from json import encoder

    if encoder.c_make_encoder is None:  # an interpreter without json's C part
        return _HASH_ENCODER.encode
    made = encoder.c_make_encoder(None, _HASH_ENCODER.default, encoder.encode_basestring_ascii, None,
                                  ":", ",", True, False, True)
    return lambda value: "".join(made(value, 0))


_ENCODE = _json_encoder()


@dataclass(frozen=True)
class TaskFile:
    """A loaded tasks file: its location, its [run] table (raw) and its tasks in order."""

    path: Path
    root: Path
    in_git: bool
    run_table: dict[str, Any]
    tasks: tuple[Task, ...]
    hashes: dict[str, str]  # task id -> definition_hash(), computed once at load
    templates: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # -> its tasks
    # its entry in the input cache, when read from there and its tasks are all the entry's (none
    # a glob's, expanded afresh each run): what derives from them alone is kept beside it
    # (cache.remember)
    cache_entry: Path | None = dataclasses.field(default=None, compare=False)

    def by_id(self) -> dict[str, Task]:
        return {t.id: t for t in self.tasks}


def _json_value(value: object) -> str:
    """TOML's dates and times, which JSON lacks, as ISO 8601 text."""
    if hasattr(value, "isoformat"):
        return value.isoformat()  # type: ignore[no-any-return]
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


TASK_FIELDS = sorted({f.name for f in dataclasses.fields(Task)} - {"id", "kind_reason", "template", "item"})
_TASK_FIELD_SET = frozenset(TASK_FIELDS)


def load_tasks(path: Path | str, root: Path | None = None) -> TaskFile:
    """Read and validate a tasks file, templates unexpanded (see `fanout`). Raises ConfigError
    (exit 2) for any problem. `root`: the repository, when not the one the file lies in (a
    tasks file that `each` wrote in the state folder)."""
    path = Path(path)
    name = str(path)
    data = read_toml(path, name)
    unknown = set(data) - {"run", "tasks"}
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(name, f"unknown top-level key {key!r}{did_you_mean(key, ['run', 'tasks'])}; "
                          "valid: [run] and [tasks.<id>]")
    run_table = data.get("run", {})
    if not isinstance(run_table, dict):
        raise ConfigError(name, "[run] must be a table", field="run")
    raw_tasks = data.get("tasks", {})
    if isinstance(raw_tasks, list):  # [[tasks]]: each task needs its id in its header
        raise ConfigError(name, "tasks are tables named by their id, [tasks.<id>], not an array "
                          "[[tasks]]", field="tasks")
    if not isinstance(raw_tasks, dict) or not raw_tasks:
        raise ConfigError(name, "no tasks: add at least one [tasks.<id>] table with a cmd or call",
                          field="tasks")
    root, in_git = paths.find_root(root or path.resolve().parent)
    tasks = tuple(_task(name, tid, body, str(root)) for tid, body in raw_tasks.items())
    _check_ids_and_deps(name, tasks)
    return TaskFile(path=path.resolve(), root=root, in_git=in_git, run_table=run_table, tasks=tasks,
                    hashes={t.id: t.definition_hash() for t in tasks})


def _task(file: str, tid: str, body: object, root: str) -> Task:
    if not isinstance(body, dict):
        raise ConfigError(file, f"must be a table like [tasks.{tid}] with a cmd or call", task=tid)
    _check_id(file, tid)
    for key in body:
        if key not in _TASK_FIELD_SET:
            raise ConfigError(file, f"unknown field{did_you_mean(key, TASK_FIELDS)}; valid fields: "
                              + ", ".join(TASK_FIELDS), task=tid, field=key)
    fields = dict(body)
    _check_command(file, tid, fields)
    if "env" in fields:
        check_env_names(file, tid, fields["env"])
    if "foreach" in fields:  # a template: its paths are checked once filled, task by task
        fields["foreach"] = check_foreach(file, tid, fields["foreach"])
        check_placeholders(file, tid, fields, fields["foreach"])
        for field in ("writes", "reads"):
            fields[field] = _path_list(file, tid, field, fields.get(field, []))
    else:
        _normalize_paths(file, tid, fields, root)
    if "resources" in fields:  # else the default, {}, as _resources would make it
        fields["resources"] = _resources(file, tid, fields["resources"])
    if "timeout" in fields:
        try:
            fields["timeout"] = parse_duration(fields["timeout"])
        except ValueError as e:
            raise ConfigError(file, str(e), task=tid, field="timeout") from None
    values = {"id": tid, **{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}}
    if plainly_valid(values):  # most tables: no pydantic (see `plain`)
        values = {**_DEFAULTS, "args": (), "kwargs": _NONE, "resources": _NONE, "env": _NONE, **values}
    else:
        values = dict(_validated(file, tid, values).__dict__)
    kind = Kind(values["kind"])
    values["kind"], values["kind_reason"] = (_detect(values["cmd"]) if kind == Kind.AUTO
                                             else (kind, "declared"))
    return unchecked_task(values)


def _validated(file: str, tid: str, values: dict[str, Any]) -> Task:
    from novaproc.inputs.schema import Invalid, validate

    try:
        return validate(Task, values)
    except Invalid as e:
        raise _from_validation(file, tid, e) from None


def unchecked_task(values: Mapping[str, Any]) -> Task:
    """The Task of `values` (every field), known to fit (checked here, or read from the cache of
    what was): without the frozen __init__'s checked setattr of each field, which was a fifth
    of reading 100,000 tables."""
    task = object.__new__(Task)
    attrs = task.__dict__
    for name in ROW_FIELDS:  # one at a time, in the class's order: the instances then share
        attrs[name] = values[name]  # one table of keys (dict.update made each a whole dict, 3x the size)
    return task


def tasks_of_rows(rows: Iterable[Sequence[Any]]) -> tuple[Task, ...]:
    """`unchecked_task` of each row of values, in the order of the fields (the cache's form):
    without a dict of each first, half the time of 100,000. ValueError for a row too short or
    too long."""
    tasks = []
    new = object.__new__
    for row in rows:
        task = new(Task)
        attrs = task.__dict__
        for name, value in zip(ROW_FIELDS, row, strict=True):  # in order, as unchecked_task
            attrs[name] = value
        tasks.append(task)
    return tuple(tasks)


# many tasks share a command ("true", "make test"): its kind is found once
_detect = functools.lru_cache(maxsize=4096)(detect)
ROW_FIELDS = tuple(f.name for f in dataclasses.fields(Task))  # a row's order (tasks_of_rows)
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Task) if f.default is not dataclasses.MISSING}
# the kwargs, resources and env of every task that sets none: one empty table, never changed (a
# Task is frozen, and nothing changes its tables), rather than three each: 19 MB of 100,000 tasks,
# and as many objects fewer to pickle and read back from the cache
_NONE: dict[str, Any] = {}


def _check_id(file: str, tid: str) -> None:
    if "{" in tid or "}" in tid:
        raise ConfigError(file, f"a task id takes no placeholder ({tid!r}); a foreach template's "
                          "tasks are named <id>.<item> for you", task=tid)
    if not valid_id(tid):
        raise ConfigError(
            file, f"invalid task id {tid!r}: ids are 1-64 characters of ASCII letters, digits, '_', '.', "
            "'-', start with a letter or digit, and do not end in '.lock' or contain '..' "
            "(they become branch and folder names)", task=tid)


def _check_command(file: str, tid: str, fields: dict[str, Any]) -> None:
    has_cmd, has_call = "cmd" in fields, "call" in fields
    if has_cmd == has_call:
        problem = "has both cmd and call" if has_cmd else "has neither cmd nor call"
        raise ConfigError(file, f"{problem}; give exactly one: cmd = \"...\" (or an argv list) or "
                          "call = \"module:function\"", task=tid, field="cmd")
    cmd = fields.get("cmd")
    if has_cmd and (cmd == "" or cmd == [] or (isinstance(cmd, str) and not cmd.strip())):
        raise ConfigError(file, "is empty; give a shell string or a non-empty argv list",
                          task=tid, field="cmd")
    call = fields.get("call")
    if has_call and not (isinstance(call, str) and CALL_TARGET.fullmatch(call)):
        raise ConfigError(file, f'invalid {call!r}; use "module:function", e.g. "tools.docs:regenerate"',
                          task=tid, field="call")
    if not has_call:
        for extra in ("args", "kwargs"):
            if extra in fields:
                raise ConfigError(file, "only applies to call tasks", task=tid, field=extra)


def _normalize_paths(file: str, tid: str, fields: dict[str, Any], root: str) -> None:
    for field in ("writes", "reads"):
        if field in fields:  # else the default, ()
            fields[field] = declared_paths(file, tid, field, fields[field], root)
    if isinstance(fields.get("cwd"), str):
        fields["cwd"] = workspace_folder(file, tid, fields["cwd"], root)


def filled_paths(file: str, root: str, where: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The paths of a task filled in from a template (`where` names it), checked and normalised."""
    fields["writes"] = tuple(declared_paths(file, where, "writes", list(fields["writes"]), root))
    fields["reads"] = tuple(declared_paths(file, where, "reads", list(fields["reads"]), root))
    if fields["cwd"] is not None:
        fields["cwd"] = workspace_folder(file, where, fields["cwd"], root)
    return fields


def _path_list(file: str, tid: str, field: str, declared: object) -> list[str]:
    if isinstance(declared, str):
        declared = [declared]
    if not isinstance(declared, list) or not all(isinstance(p, str) and p for p in declared):
        raise ConfigError(file, "must be a list of non-empty path strings", task=tid, field=field)
    return declared


def declared_paths(file: str, tid: str, field: str, declared: object, root: str) -> list[str]:
    """`writes` or `reads` normalised (see paths.normalize); ConfigError for one that climbs out."""
    declared = _path_list(file, tid, field, declared)
    for p in declared:
        if climbs(p):
            raise ConfigError(file, f"path {p!r} has a '..' after a wildcard, which may lead anywhere; "
                              f"name paths inside the repository {root} without one",
                              task=tid, field=field)
    try:
        return [paths.normalize(p, root) for p in declared]
    except paths.PathEscapes as e:
        raise ConfigError(file, f"path {e.args[0]!r} climbs out of the repository {root}; "
                          "use a path inside it, or an absolute path for a shared file",
                          task=tid, field=field) from None


def workspace_folder(file: str, tid: str, cwd: str, root: str) -> str:
    """A task's `cwd`, relative to its workspace; ConfigError for one outside it."""
    try:
        norm = paths.normalize(cwd, root) if not cwd.startswith("/") else cwd
    except paths.PathEscapes:
        norm = "/"
    if norm.startswith("/"):
        raise ConfigError(file, f"{cwd!r} must be a folder inside the task's workspace",
                          task=tid, field="cwd")
    return norm


def _resources(file: str, tid: str, value: object) -> dict[str, int]:
    check_resource_names(file, value, tid)
    if isinstance(value, list):
        return dict.fromkeys(value, 1)
    if isinstance(value, dict) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value.values()
    ):
        return dict(value)
    raise ConfigError(file, 'must be a list of names, e.g. ["docker"], or a table of counts, '
                      "e.g. {docker = 1} (counts are whole numbers >= 1)", task=tid, field="resources")


def _from_validation(file: str, tid: str, error: Invalid) -> ConfigError:
    field = error.field
    expected = {
        "description": "a string", "depends_on": "a list of task ids", "env": "a table of strings",
        "cwd": "a string", "cpu": "a whole number >= 1", "retries": "a whole number from 0 to 100",
        "allow_failure": "true or false", "kind": "one of auto, normal, git, database, deploy",
        "isolation": 'one of "worktree", "none"', "args": "a list", "kwargs": "a table",
        "cmd": "a string or a list of strings",
    }.get(field or "", "")
    got = error.got
    problem = f"{error.problem} (got {got!r})" if not isinstance(got, dict) else error.problem
    return ConfigError(file, problem + (f"; expected {expected}" if expected else ""),
                       task=tid, field=field)


def _check_ids_and_deps(file: str, tasks: tuple[Task, ...]) -> None:
    seen: dict[str, str] = {}
    for t in tasks:
        other = seen.setdefault(t.id.lower(), t.id)
        if other != t.id:
            raise ConfigError(file, f"ids {other!r} and {t.id!r} differ only in case; they would "
                              "clash as branch and folder names on some systems", task=t.id)
    ids = [t.id for t in tasks]
    known = set(ids)
    templates = tuple(f"{t.id}." for t in tasks if t.foreach is not None)
    for t in tasks:
        for dep in t.depends_on:
            if dep == t.id:
                raise ConfigError(file, f"dependency cycle: {t.id} -> {t.id}; remove this dependency"
                                  + ("; a template's tasks do not wait for each other" if t.foreach
                                     else ""), task=t.id, field="depends_on")
            if dep not in known and not dep.startswith(templates):  # one task of a template:
                raise ConfigError(file, f"unknown task {dep!r}{did_you_mean(dep, ids)}",  # see fanout
                                  task=t.id, field="depends_on")
