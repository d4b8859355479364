"""The one look at a run's repository before anything runs: ready for a run (no merge or rebase
in progress, a commit to start from), where the results will land, the commit tasks start
from, and what the checkout holds beyond it. Every later step of the run uses this record
and its Repo instead of asking git again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from novaproc.errors import EnvironmentFault, UsageError
from novaproc.isolation.repo import IN_PROGRESS, Repo


@dataclass(frozen=True)
class Preflight:
    repo: Repo
    branch: str | None  # checked out when the run starts; None when HEAD is detached
    target: str | None  # the branch results merge into; None only with merge = "off"
    base: str  # the commit every task starts from: the target's tip
    dirty: tuple[str, ...]  # uncommitted changes in the checkout, which the run does not see

    @property
    def root(self) -> Path:
        return self.repo.root

    def dirty_note(self) -> tuple[str, ...]:
        """A plan warning when tasks start from the last commit while the checkout has more."""
        if not self.dirty:
            return ()
        return (f"{len(self.dirty)} uncommitted change(s) in {self.root} (e.g. {self.dirty[0]}) are "
                "not part of the run's base: tasks start from the last commit",)


def preflight(root: Path, *, target: str | None, merge: str) -> Preflight:
    """Check the repository holding `root` for a run that merges (`merge` "auto") into `target`
    (None: the branch checked out). Raises UsageError (exit 2: nothing ran) with what to do."""
    try:
        repo = Repo(root)
    except EnvironmentFault as e:
        raise UsageError(f"{root} is not usable as a git repository: {e}") from None
    for marker, (what, todo) in IN_PROGRESS.items():
        if (repo.git_dir / marker).exists():
            raise UsageError(f"{repo.root} is in the middle of {what}: {todo}, then run again")
    head = repo.rev("HEAD")
    if head is None:
        raise UsageError(f"{repo.root} has no commit yet: commit something first, then run again")
    branch = repo.current_branch()
    base = head
    if target is not None:
        tip = repo.rev(f"refs/heads/{target}")
        if tip is None and merge == "auto":
            raise UsageError(f"target {target!r} is not a branch of {repo.root}")
        base = tip or head
    elif branch is None and merge == "auto":
        raise UsageError(f"{repo.root}: HEAD is detached, so there is no branch to merge into; "
                         'check out a branch, or set target (or merge = "off")')
    return Preflight(repo, branch, target or branch, base, repo.dirty_paths(repo.root))
