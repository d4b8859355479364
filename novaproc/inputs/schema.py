"""Validation by pydantic of values declared for a dataclass (a Task, the Settings).

The dataclasses themselves are plain, so the common path (a tasks file validated before, see
`inputs`) never loads pydantic: importing it and building its validators costs about 0.14 s
here, as much as everything else `novaproc run` does before its first task. This module is
the only one that imports pydantic; it is loaded when something must be validated.

Constraints live in each field's annotation, as annotated-types objects (`Ge`, `Le`, `Gt`)
or `Lax` (accept a value that converts, such as "git" for a Kind). The annotations are
strings that only this module evaluates, so their names need not exist at run time.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, TypeVar

import annotated_types
from pydantic import ConfigDict, Field, Strict, ValidationError, create_model

Lax = Strict(False)
# the names that constraint annotations may use
_NAMES = {"Ge": annotated_types.Ge, "Gt": annotated_types.Gt, "Le": annotated_types.Le, "Lax": Lax}


T = TypeVar("T")


class Invalid(ValueError):
    """A value does not fit its field. `field` is None when the problem is not one field's."""

    def __init__(self, field: str | None, problem: str, got: object) -> None:
        super().__init__(problem)
        self.field, self.problem, self.got = field, problem, got


def validate(cls: type[T], values: dict[str, Any]) -> T:
    """`cls(**values)`, once every value fits its annotated type (strictly: no "1" for 1).
    Raises Invalid for the first field that does not fit, or for an unknown field."""
    try:
        model = _model(cls)(**values)
    except ValidationError as e:
        first = e.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else None
        raise Invalid(field, first["msg"], first.get("input")) from None
    return cls(**{f.name: getattr(model, f.name) for f in dataclasses.fields(cls)})  # type: ignore[arg-type]


@functools.cache
def _model(cls: type) -> Any:
    """A pydantic model with the fields, types, defaults and constraints of dataclass `cls`."""
    hints = typing.get_type_hints(cls, localns=_NAMES, include_extras=True)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:
            fields[f.name] = (hints[f.name], Field(default_factory=f.default_factory))
        else:
            required = f.default is dataclasses.MISSING
            fields[f.name] = (hints[f.name], ... if required else f.default)
    config = ConfigDict(extra="forbid", strict=True)
    return create_model(cls.__name__, __config__=config, **fields)
