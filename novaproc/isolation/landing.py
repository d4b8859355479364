"""Landing a run's merged result on its target branch: the user's checkout of it is moved as
`git merge --ff-only` would, then the branch by compare-and-swap. The landing is announced first
(the journal fsyncs it), so a supervisor killed half-way is finished by `resume` with
`finish_landing`: the checkout ends as it was before the landing or as it is after, never between.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from novaproc.isolation.clean import remove_stale_locks
from novaproc.isolation.repo import IN_PROGRESS, Repo, admin_dir
from novaproc.messages import LandingStarted


@dataclass(frozen=True, slots=True)
class Blocked:
    """Why a result could not land, and what the user may do ({branch}: where it waits)."""

    why: str
    todo: str


def land(repo: Repo, ref: str, old: str, new: str, run_id: str, *,
         announce: Callable[[LandingStarted], None], verify: Callable[[str], bool] | None,
         notes: list[str]) -> Blocked | None:
    """Move `ref` from `old` to `new`; None when done. A target moved meanwhile is merged with
    `new` and, with `verify`, verified again before it lands."""
    name = ref.removeprefix("refs/heads/")
    for _ in range(5):
        current = repo.rev(ref)
        if current is None:
            return Blocked(f"{name} was deleted meanwhile", "take it with: git branch {name} {branch}")
        if current != old:  # before the checkout is touched: it is at `current` now, not `old`
            moved = _onto_moved_target(repo, name, current, new, run_id, verify, notes)
            if isinstance(moved, Blocked):
                return moved
            old, new = current, moved
        checkout = next((w.path for w in repo.worktrees() if w.branch == name), None)
        announce(LandingStarted(ref, old, new, str(checkout) if checkout else None))
        if checkout is not None and (why := _advance_checkout(repo, checkout, old, new)):
            return Blocked(why, "commit or stash those changes, then run: git merge {branch}")
        if repo.set_ref(ref, new, old, f"novaproc: merge run {run_id}"):
            return None
        if checkout is not None:  # it moved between the look and the swap: put the checkout back
            _advance_checkout(repo, checkout, new, old)
    return Blocked(f"{name} keeps moving", "take it when it rests: git merge {branch}")


def _onto_moved_target(repo: Repo, name: str, current: str, new: str, run_id: str,
                       verify: Callable[[str], bool] | None, notes: list[str]) -> str | Blocked:
    merged = repo.merge(current, new, f"Merge novaproc run {run_id} into {name}")
    if merged.commit is None:
        return Blocked(f"{name} moved during the run and its new commits conflict with the result in "
                       + ", ".join(merged.conflicts), "merge it by hand: git merge {branch}")
    if verify is not None and not verify(merged.commit):
        return Blocked(f"{name} moved during the run, and verify fails on its new commits merged with "
                       "the result", "see what fails with: git merge {branch}")
    notes.append(f"{name} moved during the run; the result was merged onto its new tip"
                 + (" and verified again" if verify is not None else " (there is no verify to run)"))
    return merged.commit


def _advance_checkout(repo: Repo, checkout: Path, old: str, new: str) -> str | None:
    """Update the checkout at `checkout` from `old` to `new` as `git merge --ff-only` would:
    uncommitted changes elsewhere stay; if any is in the way nothing changes. None when done."""
    gitdir = admin_dir(checkout)
    busy = [what for marker, (what, _) in IN_PROGRESS.items() if (gitdir / marker).exists()]
    if busy:
        return f"your checkout at {checkout} is in the middle of {busy[0]}"
    repo.run("update-index", "-q", "--refresh", cwd=checkout)
    code, _, _ = repo.run("read-tree", "-m", "-u", old, new, cwd=checkout)
    if code == 0:
        return None
    touched = set(repo.changed(old, new))
    dirty = [p for p in repo.dirty_paths(checkout)
             if p in touched or any(t.startswith(p + "/") for t in touched)]
    return (f"your checkout at {checkout} has uncommitted changes the update would overwrite"
            + (f" ({', '.join(dirty[:5])})" if dirty else ""))


def finish_landing(repo: Repo, landing: LandingStarted) -> str:
    """Finish a landing its supervisor did not live to finish; what was done, in a sentence.

    The files the result changes were clean in the checkout when it began (or it would not
    have), so they are set to the result's, whatever state the kill left them in; then the
    branch moves, unless somebody moved it elsewhere meanwhile."""
    name = landing.ref.removeprefix("refs/heads/")
    current = repo.rev(landing.ref)
    if current not in (landing.old, landing.new):
        return f"{name} moved elsewhere since the interrupted landing; it was left as it is"
    if landing.checkout is not None:
        remove_stale_locks(repo, min_age=0.0)  # the dead supervisor's git, if it left one
        _set_files(repo, Path(landing.checkout), landing.old, landing.new)
    if current == landing.old:
        repo.set_ref(landing.ref, landing.new, landing.old, "novaproc: finish an interrupted landing")
    return f"the interrupted landing on {name} was finished: it is at {landing.new[:12]}"


def _set_files(repo: Repo, checkout: Path, old: str, new: str) -> None:
    """The files that differ between `old` and `new`, in the checkout's index and folder, as in
    `new`: restored from it, or removed where it deleted them."""
    deleted = repo.deleted(old, new)
    present = [p for p in repo.changed(old, new) if p not in deleted]
    for paths, command in ((present, ["restore", f"--source={new}", "--staged", "--worktree"]),
                           (sorted(deleted), ["rm", "-q", "-r", "--cached", "--ignore-unmatch"])):
        if paths:
            repo.git(*command, "--pathspec-from-file=-", "--pathspec-file-nul", stdin="\0".join(paths),
                     cwd=checkout)
    for path in deleted:
        (checkout / path).unlink(missing_ok=True)
