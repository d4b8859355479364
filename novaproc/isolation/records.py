"""What the git adapter (repo.py) answers with: small frozen records of worktrees and merges."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Worktree:
    """A linked worktree: its folder and its administrative folder inside the common dir."""

    path: Path
    admin: Path


@dataclass(frozen=True, slots=True)
class WorktreeEntry:
    """One line of `git worktree list`: where, at what commit, on which branch."""

    path: Path
    head: str | None
    branch: str | None
    prunable: bool


@dataclass(frozen=True, slots=True)
class Merged:
    """The result of merging `theirs` into `ours`: a commit, or the files that conflict."""

    commit: str | None
    conflicts: tuple[str, ...] = ()
    how: str = "merge"  # contained, fast-forward, merge, conflict
    tree: str | None = None  # the tree of a new merge commit
