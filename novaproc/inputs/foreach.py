"""A `foreach` as the tasks file gives it: its items' kind (a glob, a list, a matrix), checked
when the file is read, and the placeholders its template may use (see `placeholders`).
Expanding a template into tasks is `fanout`'s.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from novaproc.errors import ConfigError
from novaproc.inputs import paths
from novaproc.inputs.placeholders import (
    FILE_NAMES,
    Template,
    UnknownPlaceholder,
    unknown_hint,
    unsafe_placeholder,
)
from novaproc.inputs.trust import climbs

MAX_TEMPLATE_ID = 48  # room is left for ".<slug>-<hash>" within the 64 characters of an id
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# the fields whose strings take placeholders (cmd is filled apart: a shell string is quoted)
TEMPLATE_FIELDS = ("description", "writes", "reads", "cwd", "env", "args", "kwargs")

Foreach = str | tuple[str, ...] | dict[str, tuple[str, ...]]


def check_foreach(file: str, tid: str, value: object) -> Foreach:
    """`foreach` as a glob, a tuple of strings or a matrix of tuples; ConfigError otherwise."""
    if len(tid) > MAX_TEMPLATE_ID:
        raise ConfigError(file, f"a foreach template's id is at most {MAX_TEMPLATE_ID} characters: "
                          "its tasks' ids add the item", task=tid)
    if isinstance(value, str):
        if not value.strip():
            raise ConfigError(file, "is an empty glob", task=tid, field="foreach")
        if climbs(value) or _escapes(value):
            raise ConfigError(file, f"glob {value!r} climbs out of the folder it is matched in; use "
                              "a pattern inside the repository, or an absolute one", task=tid,
                              field="foreach")
        return value
    if isinstance(value, list):
        return _strings(file, tid, "foreach", value)
    if isinstance(value, dict) and value:
        for key in value:
            if not _KEY.fullmatch(key) or key == "item":
                raise ConfigError(file, f"matrix key {key!r} must be a name of letters, digits and '_' "
                                  "(not 'item', which names the whole combination)", task=tid,
                                  field="foreach")
        return {k: _strings(file, tid, f"foreach.{k}", v) for k, v in value.items()}
    raise ConfigError(file, 'must be a glob ("src/**/*.py"), a list of strings, or a table of lists '
                      '(a matrix, {py = ["3.11", "3.12"]})', task=tid, field="foreach")


def _escapes(pattern: str) -> bool:
    try:
        return not pattern.startswith("/") and paths.normalize(pattern, "/") == ".."
    except paths.PathEscapes:
        return True


def _strings(file: str, tid: str, field: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(file, "must be a non-empty list of strings", task=tid, field=field)
    for item in value:
        if not isinstance(item, str):
            raise ConfigError(file, f"holds {item!r}; items are strings (quote numbers: \"3.12\")",
                              task=tid, field=field)
    twice = next((item for item, n in Counter(value).items() if n > 1), None)
    if twice is not None:
        raise ConfigError(file, f"lists {twice!r} twice; each item makes one task", task=tid, field=field)
    return tuple(value)


def placeholder_names(foreach: Foreach) -> tuple[str, ...]:
    return ("item", *foreach) if isinstance(foreach, dict) else FILE_NAMES


def check_placeholders(file: str, tid: str, fields: Mapping[str, Any], foreach: Foreach) -> None:
    """Every placeholder of a template is one its items define (ConfigError otherwise)."""
    known = placeholder_names(foreach)
    for field in ("cmd", *TEMPLATE_FIELDS):
        for text in texts(fields.get(field)):
            try:
                Template.parse(text).check(known)
            except UnknownPlaceholder as e:
                raise ConfigError(file, unknown_hint(e), task=tid, field=field) from None
    cmd = fields.get("cmd")
    if isinstance(cmd, str) and (unsafe := unsafe_placeholder(Template.parse(cmd))) is not None:
        name, where = unsafe
        raise ConfigError(file, f"{{{name}}} is {where}, where the shell would not take its value as "
                          f"one word; each value is quoted for the shell already, so write it bare, "
                          f"as in: echo {{{name}}}", task=tid, field="cmd")


def texts(value: object) -> list[str]:
    """Every string inside `value` (tables' values, not their keys)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [s for v in value for s in texts(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in texts(v)]
    return []
