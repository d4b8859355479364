"""Path rules: where a run's repository is, and when two declared paths overlap.

A declared path is relative to the repository root, or absolute (a machine-wide shared
file). A glob counts as its fixed prefix; a folder overlaps everything under it. The
functions here are pure string work except `find_root` and `canonical`, which look at disk.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

GLOB_CHARS = frozenset("*?[")

PathKey = tuple[str, ...]
"""An absolute, normalised path split into components; ("/",) is the file-system root."""


class PathEscapes(ValueError):
    """A relative path that climbs out of the repository."""


def find_root(start: Path) -> tuple[Path, bool]:
    """The git repository holding `start` (a folder), or `start` itself outside git."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder, True
    return start, False


def fixed_prefix(pattern: str) -> str:
    """The leading components of `pattern` that hold no glob character ('' for none)."""
    parts = pattern.split("/")
    kept: list[str] = []
    for part in parts:
        if GLOB_CHARS & set(part):
            break
        kept.append(part)
    return "/".join(kept)


def has_glob(declared: str) -> bool:
    return "*" in declared or "?" in declared or "[" in declared


def normalize(declared: str, root: str) -> str:
    """`declared` made repo-relative ('.' for the root) or kept absolute when outside `root`.

    Raises PathEscapes for a relative path that climbs out of the repository.
    """
    if is_normal(declared):  # as most are: normpath, in Python, was a third of checking 100,000
        return declared
    path = fixed_prefix(declared.strip()) if has_glob(declared) else declared.strip()
    if posixpath.isabs(path):
        path = posixpath.normpath(path)
        rel = posixpath.relpath(path, root)
        return path if rel == ".." or rel.startswith("../") else rel
    rel = posixpath.normpath(path or ".")
    if rel == ".." or rel.startswith("../"):
        raise PathEscapes(declared)
    return rel


def is_normal(declared: str) -> bool:
    """Relative, without glob characters, and what normalising it gives: no surrounding space,
    no empty, '.' or '..' component."""
    if not declared or declared[0] == "/" or has_glob(declared) or declared != declared.strip():
        return False
    parts = declared.split("/")
    return "" not in parts and "." not in parts and ".." not in parts


def key(normalized: str, root: str) -> PathKey:
    """The component tuple of a normalised path, anchored at `root` when relative."""
    full = normalized if posixpath.isabs(normalized) else posixpath.join(root, normalized)
    full = posixpath.normpath(full)
    return ("/", *[p for p in full.split("/") if p])


def overlaps(a: PathKey, b: PathKey) -> bool:
    """True when one path is the other or lies under it."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def canonical(normalized: str, root: str) -> str:
    """The absolute path with symlinks resolved, so two spellings of one file are one lock."""
    full = normalized if os.path.isabs(normalized) else os.path.join(root, normalized)
    return os.path.realpath(full)
