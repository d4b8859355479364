"""Placeholders of a fan-out template: `{item}` (also `{}`), `{name}`, `{stem}`, `{suffix}`,
`{dir}` and a matrix's keys; `{{` and `}}` are literal braces.

A placeholder is a name in braces and nothing else, so the braces of a shell command that hold
anything else (`awk '{print $1}'`, `{a,b}`) stay as they are. `${HOME}` would read as the
placeholder `{HOME}`: the error says to write `${{HOME}}`. A template is parsed once; filling
it for each item is a join.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

FILE_NAMES = ("item", "name", "stem", "suffix", "dir")
_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)?\}")


class UnknownPlaceholder(ValueError):
    """A template names a placeholder its items do not have."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        super().__init__(name)
        self.name, self.known = name, tuple(known)


@dataclass(frozen=True, slots=True)
class Template:
    """A string cut into literal text (even positions) and placeholder names (odd positions)."""

    parts: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Template:
        parts, literal, at = [], [], 0
        for m in _TOKEN.finditer(text):
            literal.append(text[at:m.start()])
            at = m.end()
            token = m.group(0)
            if token in ("{{", "}}"):
                literal.append(token[0])
                continue
            parts += ["".join(literal), m.group(1) or "item"]
            literal = []
        literal.append(text[at:])
        return cls((*parts, "".join(literal)))

    @property
    def names(self) -> tuple[str, ...]:
        return self.parts[1::2]

    def check(self, known: Iterable[str]) -> None:
        """Raises UnknownPlaceholder for the first name outside `known`."""
        known = tuple(known)
        for name in self.names:
            if name not in known:
                raise UnknownPlaceholder(name, known)

    def fill(self, values: Mapping[str, str], *, quote: bool = False) -> str:
        """The text with each placeholder replaced; shell-quoted for a shell string."""
        parts = list(self.parts)
        for i in range(1, len(parts), 2):
            parts[i] = shlex.quote(values[parts[i]]) if quote else values[parts[i]]
        return "".join(parts)


def unsafe_placeholder(template: Template) -> tuple[str, str] | None:
    """The first placeholder of a shell string the shell would not take as one quoted word, and
    where it stands: inside quotes (a value holding a quote would end them), after a backslash
    or a `$`, or in a string with a heredoc (whose body the shell expands). Each value is quoted
    for the shell already; these are the places where that quoting does not hold."""
    quote, escaped = "", False
    for i, part in enumerate(template.parts):
        if i % 2:
            where = ("inside quotes" if quote else "after a backslash" if escaped
                     else "after a $" if template.parts[i - 1].endswith("$") else None)
            if where:
                return part, where
            escaped = False
            continue
        for j, ch in enumerate(part):
            if escaped:
                escaped = False
            elif ch == "\\" and quote != "'":  # in $'...' too
                escaped = True
            elif quote and ch == quote[-1]:
                quote = ""
            elif not quote and ch == "'" and part[j - 1:j] == "$":
                quote = "$'"
            elif not quote and ch in "'\"":
                quote = ch
            elif not quote and part.startswith("<<", j) and len(template.parts) > 1:
                return template.parts[1], "in a string with a heredoc"
    return None


def file_values(item: str) -> dict[str, str]:
    """The placeholders of an item that names a file: {item}, {name}, {stem}, {suffix}, {dir}."""
    name = posixpath.basename(item.rstrip("/")) or item
    stem, dot, after = name.rpartition(".")
    if not stem:  # ".bashrc", "README": no suffix
        stem, dot, after = name, "", ""
    return {"item": item, "name": name, "stem": stem, "suffix": dot + after,
            "dir": posixpath.dirname(item.rstrip("/")) or "."}


def unknown_hint(error: UnknownPlaceholder) -> str:
    """What to write instead, for the error of a placeholder nothing defines."""
    from novaproc.errors import did_you_mean

    known = ", ".join("{" + k + "}" for k in error.known)
    shell = (f"; for a shell variable write ${{{{{error.name}}}}}" if error.name.isupper()
             else f"; for the literal text write {{{{{error.name}}}}}")
    return (f"unknown placeholder {{{error.name}}}{did_you_mean(error.name, error.known)}; "
            f"known here: {known}, and {{{{ }}}} for a literal brace{shell}")
