"""Settings: one set of keys, layered default < nova.toml < [run] < NOVA_* env < flags.

Each layer is validated on its own so an error names where the bad value came from.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from novaproc.errors import ConfigError, did_you_mean
from novaproc.inputs.plain import plain_settings
from novaproc.inputs.tomlfile import read_toml
from novaproc.inputs.trust import check_resource_names, outside

if TYPE_CHECKING:  # constraint names, evaluated by `schema` alone (see its docstring)
    from annotated_types import Ge, Gt, Le

    from novaproc.inputs.taskfile import Task

DEFAULT_WORKTREE_DIR = "/tmp/nova-worktrees"
MAX_SLOTS = 4096
ENV_KEYS = {
    "NOVA_MAX_PARALLEL": "max_parallel",
    "NOVA_WORKTREE_DIR": "worktree_dir",
    "NOVA_STATE_DIR": "state_dir",
    "NOVA_EXECUTOR": "executor",
    "NOVA_SCHEDULER": "scheduler",
    "DASK_SCHEDULER_ADDRESS": "scheduler",  # Dask's own variable, below NOVA_SCHEDULER
}
# a Dask scheduler's address ("tcp://host:8786", "host:8786"), or "local:N" for a LocalCluster
SCHEDULER = re.compile(r"(?:local:(?P<workers>\d+))|(?:(?:tcp|tls|ucx|ws|wss)://)?[\w.\[\]:-]+:\d+")


@dataclass(frozen=True)
class Settings:
    """Every setting of a run, with its built-in default."""

    max_parallel: Annotated[int, Ge(1), Le(MAX_SLOTS)] = 4
    worktree_dir: str = DEFAULT_WORKTREE_DIR
    state_dir: str | None = None
    isolation: Literal["worktree", "none"] | None = None
    merge: Literal["auto", "off"] = "auto"
    history: Literal["merge", "linear", "squash"] = "merge"  # the shape of what lands
    target: str | None = None
    on_conflict: Literal["rerun", "fail"] = "rerun"
    verify: str | tuple[str, ...] | None = None
    cpu_limit: Annotated[float, Gt(0), Le(100)] = 90.0
    memory_limit: Annotated[float, Gt(0), Le(100)] = 90.0
    kill_grace: Annotated[float, Ge(0), Le(3600)] = 5.0
    retry_delay: Annotated[float, Ge(0), Le(3600)] = 1.0  # before a task's 2nd attempt, doubling
    keep_runs: Annotated[float, Ge(0)] = 30 * 86400.0  # `clean --runs` removes older journals
    fail_fast: bool = False
    undeclared_writes: Literal["warn", "fail"] = "warn"
    worktree_setup: str | None = None
    worktree_include: tuple[str, ...] = ()
    verify_retries: Annotated[int, Ge(0), Le(100)] = 1
    conflict_check: Literal["file", "line"] = "file"
    resources: dict[str, Annotated[int, Ge(1)]] = dataclasses.field(default_factory=dict)
    executor: Literal["local", "dask"] = "local"  # dask: the tasks run on a Dask cluster
    scheduler: str | None = None  # with executor "dask": where its scheduler is

    def resolved_isolation(self, in_git: bool) -> str:
        return self.isolation or ("worktree" if in_git else "none")

    def state_path(self, root: Path) -> Path:
        return Path(self.state_dir) if self.state_dir else root / ".nova"


def on_cluster(task: Task, settings: Settings) -> bool:
    """Whether `task` runs on the Dask cluster: unless it is pinned here, or names absolute paths
    (their locks, and the files, are this machine's)."""
    return (settings.executor == "dask" and task.executor != "local"
            and not any(p.startswith("/") for p in (*task.writes, *task.reads)))


KEYS = sorted(f.name for f in dataclasses.fields(Settings))
# any text is a valid value of these: checking them needs no validator (nor loading pydantic,
# ~0.13 s, for `status --state-dir X` or NOVA_STATE_DIR)
_TEXT_KEYS = {f.name for f in dataclasses.fields(Settings) if f.type in ("str", "str | None")}


def load_settings(
    root: Path,
    run_table: Mapping[str, Any] | None = None,
    *,
    tasks_file: str = "tasks file",
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    quick: bool = False,
) -> Settings:
    """The settings of a run: each layer overrides the one below it.

    `quick`: take plainly valid values (see `plain`) without loading pydantic (~70 ms), as the
    commands that only read the settings (status, lock, clean) do; the same values pass or fail.
    Otherwise only text values skip it: a run's reading of its inputs is cached (see `cache`)."""
    merged: dict[str, Any] = {}
    nova_toml = config_file or root / "nova.toml"
    if config_file is not None or nova_toml.is_file():
        merged |= _layer(str(nova_toml), read_toml(nova_toml, str(nova_toml)), quick)
    merged |= _layer(f"{tasks_file} [run]", dict(run_table or {}), quick)
    merged |= _layer("environment", _from_env(os.environ if environ is None else environ), quick)
    merged |= _layer("command line", {k: v for k, v in (flags or {}).items() if v is not None}, quick)
    if merged.get("executor") == "dask" and not merged.get("scheduler"):  # the one rule of two keys
        raise ConfigError("settings", 'executor = "dask" needs a scheduler: scheduler = "tcp://host:8786" '
                          '(NOVA_SCHEDULER, DASK_SCHEDULER_ADDRESS), or "local:N" for N local workers',
                          field="scheduler")
    return Settings(**merged)  # each layer is valid


def state_path_of(root: Path, config_file: Path | None = None,
                  environ: Mapping[str, str] | None = None) -> Path:
    """Where runs are kept, as `load_settings(...).state_path(root)` says, without validating the
    other settings (that needs pydantic: 0.14 s). `each` writes its tasks file there first."""
    value = (os.environ if environ is None else environ).get("NOVA_STATE_DIR") or None
    nova = config_file or root / "nova.toml"
    if value is None and (config_file is not None or nova.is_file()):
        value = _layer(str(nova), {"state_dir": read_toml(nova, str(nova)).get("state_dir")}).get("state_dir")
    return Settings(state_dir=value).state_path(root)


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for var, key in ENV_KEYS.items():
        value = environ.get(var)
        if value is None or value == "" or key in layer:  # NOVA_SCHEDULER before Dask's variable
            continue
        if key == "max_parallel":
            if not value.strip().isdigit() or not 1 <= int(value) <= MAX_SLOTS:
                raise ConfigError("environment", f"{var}={value!r} is not a whole number from 1 "
                                  f"to {MAX_SLOTS}", field=var)
            layer[key] = int(value)
        else:
            layer[key] = value
    return layer


def _scheduler_ok(address: str) -> bool:
    found = SCHEDULER.fullmatch(address)
    return found is not None and (found["workers"] is None or 1 <= int(found["workers"]) <= MAX_SLOTS)


def _seconds(source: str, key: str, value: str) -> float:
    from novaproc.inputs.durations import parse_duration

    try:
        return 0.0 if value.strip() in ("0", "0s") else parse_duration(value)
    except ValueError as e:
        raise ConfigError(source, str(e), field=key) from None


def _layer(source: str, values: dict[str, Any], quick: bool = False) -> dict[str, Any]:
    """`values` checked against the settings' fields, with errors naming `source`."""
    for key in values:
        if key not in KEYS:
            raise ConfigError(source, f"unknown setting{did_you_mean(key, KEYS)}; valid settings: "
                              + ", ".join(KEYS), field=key)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    include = values.get("worktree_include", ())
    for entry in include if isinstance(include, tuple) else ():  # other types: the schema says
        if isinstance(entry, str) and outside(entry):
            raise ConfigError(source, f"{entry!r} is not a path inside the repository; worktree_include "
                              "names untracked paths of the checkout, relative to its root",
                              field="worktree_include")
    for key in ("cpu_limit", "memory_limit", "kill_grace", "retry_delay", "keep_runs"):
        if isinstance(values.get(key), int) and not isinstance(values[key], bool):
            values[key] = float(values[key])
    for key in ("retry_delay", "keep_runs"):  # durations: "1s", "2m", "30d"
        if isinstance(values.get(key), str):
            values[key] = _seconds(source, key, values[key])
    check_resource_names(source, values.get("resources"))
    scheduler = values.get("scheduler")
    if isinstance(scheduler, str) and not _scheduler_ok(scheduler):
        raise ConfigError(source, f"{scheduler!r} is not a Dask scheduler address; write "
                          '"tcp://host:8786", "host:8786", or "local:N" (N local worker processes)',
                          field="scheduler")
    if quick and plain_settings(values):
        return values
    if all(key in _TEXT_KEYS and isinstance(value, str) for key, value in values.items()):
        return values
    from novaproc.inputs.schema import Invalid, validate

    try:
        validate(Settings, values)
    except Invalid as e:
        raise ConfigError(source, f"{e.problem} (got {e.got!r})", field=e.field) from None
    return values
