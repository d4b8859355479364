"""Task and settings values that need no pydantic: the plain types TOML gives, checked as
strictly as the pydantic model of a Task or of the Settings (see `schema`) would, so that model
would accept them unchanged.

Validating 100,000 tables through pydantic, one model each, was a third of reading them. Most
tables hold only strings, lists of strings and small whole numbers; those are checked here, and
anything else (a foreach, a value of the wrong type, a kind to convert) goes through `schema`,
which gives the same result or the one clear error. Settings are checked here so that reading
them (`status` in a repository whose nova.toml sets numbers) does not load pydantic (~70 ms).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from novaproc.inputs.kinds import Kind


def _text(v: object) -> bool:
    return type(v) is str


def _texts(v: object) -> bool:
    return type(v) is tuple and all(type(x) is str for x in v)


def _whole(low: int, high: int | None = None) -> Callable[[object], bool]:
    return lambda v: type(v) is int and v >= low and (high is None or v <= high)


def _table(value_ok: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda v: type(v) is dict and all(type(k) is str and value_ok(x) for k, x in v.items())


def _choice(*allowed: str) -> Callable[[object], bool]:
    return lambda v: type(v) is str and v in allowed


def _real(low: float, high: float | None = None, *, above: bool = False) -> Callable[[object], bool]:
    """A finite float from `low` (excluded when `above`) to `high`; inf and nan go to pydantic."""
    return lambda v: (type(v) is float and math.isfinite(v) and (v > low if above else v >= low)
                      and (high is None or v <= high))


def _optional(ok: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda v: v is None or ok(v)


# every field of a Task but `foreach` (a template: rare, left to pydantic)
_CHECKS: dict[str, Callable[[object], bool]] = {
    "id": _text,
    "cmd": lambda v: v is None or _text(v) or _texts(v),
    "call": _optional(_text),
    "args": lambda v: type(v) is tuple,
    "kwargs": _table(lambda _: True),
    "description": _text,
    "depends_on": _texts,
    "writes": _texts,
    "reads": _texts,
    "resources": _table(_whole(1)),
    "kind": lambda v: type(v) is Kind or (type(v) is str and v in _KINDS),
    "kind_reason": _text,
    "isolation": _optional(_choice("worktree", "none")),
    "timeout": lambda v: v is None or type(v) is float,
    "retries": _whole(0, 100),
    "env": _table(_text),
    "cwd": _optional(_text),
    "cpu": _whole(1),
    "allow_failure": lambda v: type(v) is bool,
    "executor": _optional(_choice("local", "dask")),
    "template": _optional(_text),
    "item": _optional(_text),
}
_KINDS = frozenset(k.value for k in Kind)


# every field of the Settings, as `settings._layer` hands them over (lists made tuples, numbers
# of the float fields made floats, durations made seconds)
_SETTINGS_CHECKS: dict[str, Callable[[object], bool]] = {
    "max_parallel": _whole(1, 4096),  # settings.MAX_SLOTS
    "worktree_dir": _text,
    "state_dir": _optional(_text),
    "isolation": _optional(_choice("worktree", "none")),
    "merge": _choice("auto", "off"),
    "history": _choice("merge", "linear", "squash"),
    "target": _optional(_text),
    "on_conflict": _choice("rerun", "fail"),
    "verify": lambda v: v is None or _text(v) or _texts(v),
    "cpu_limit": _real(0, 100, above=True),
    "memory_limit": _real(0, 100, above=True),
    "kill_grace": _real(0, 3600),
    "retry_delay": _real(0, 3600),
    "keep_runs": _real(0),
    "fail_fast": lambda v: type(v) is bool,
    "undeclared_writes": _choice("warn", "fail"),
    "worktree_setup": _optional(_text),
    "worktree_include": _texts,
    "verify_retries": _whole(0, 100),
    "conflict_check": _choice("file", "line"),
    "resources": _table(_whole(1)),
    "executor": _choice("local", "dask"),
    "scheduler": _optional(_text),
}


def plainly_valid(values: Mapping[str, Any]) -> bool:
    """True when every value is of a plain type its Task field takes; False sends the values to
    pydantic (which may still accept them, or names what is wrong)."""
    return _all_pass(_CHECKS, values)


def plain_settings(values: Mapping[str, Any]) -> bool:
    """`plainly_valid` for a layer of settings."""
    return _all_pass(_SETTINGS_CHECKS, values)


def _all_pass(checks: Mapping[str, Callable[[object], bool]], values: Mapping[str, Any]) -> bool:
    for name, value in values.items():
        check = checks.get(name)
        if check is None or not check(value):
            return False
    return True
