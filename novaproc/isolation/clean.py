"""`novaproc clean`, and the clean-up before a crashed run resumes: the worktrees, branches and
index.lock files that finished or crashed runs left behind, never those of a live run (one
whose supervisor still holds its Workspaces).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from novaproc.isolation.repo import Repo
from novaproc.isolation.worktree_pool import points_into


@dataclass(frozen=True, slots=True)
class CleanReport:
    """What `clean` removed, and the live runs it left alone."""

    worktrees: tuple[Path, ...]
    branches: tuple[str, ...]
    locks: tuple[Path, ...]
    live_runs: tuple[str, ...]


def clean(repo_root: Path, *, worktree_dir: Path, all_branches: bool = False) -> CleanReport:
    """`novaproc clean [--all]`: remove the worktrees of runs that are not live (kept ones too),
    prune stale worktree records, delete nova/* branches already merged into another local branch
    (with `all_branches`: every nova/* branch of a run that is not live), and remove index.lock
    files no live git process holds. Runs are live while a supervisor holds their Workspaces."""
    repo = Repo(repo_root)
    live = repo.live_runs()
    removed = _remove_worktrees(repo, Path(worktree_dir), live)
    refs = [r for r in repo.refs("refs/heads/nova/") if r.split("/")[3] not in live]
    if not all_branches:
        merged = _merged_elsewhere(repo)
        refs = [r for r in refs if r in merged]
    repo.delete_refs(refs)
    locks = remove_stale_locks(repo)
    return CleanReport(tuple(removed), tuple(r.removeprefix("refs/heads/") for r in refs),
                       tuple(locks), tuple(sorted(live)))


def forget_run(repo: Repo, *, worktree_dir: Path, run_id: str) -> list[Path]:
    """Remove what a crashed supervisor of `run_id` left in `worktree_dir` (its task and spare
    worktrees), before the run resumes; the results stay on their branches."""
    return _remove_worktrees(repo, Path(worktree_dir), set(), only=run_id)


def _remove_worktrees(repo: Repo, folder: Path, live: set[str], only: str | None = None) -> list[Path]:
    if not folder.is_dir():
        return []
    folder = folder.resolve()
    removed: list[Path] = []
    with repo.worktree_lock():
        registered = {e.path for e in repo.worktrees()}
        for path in sorted(folder.iterdir()):
            if any(path.name.startswith(f"{run}-") for run in live):
                continue
            if only is not None and not path.name.startswith(f"{only}-"):
                continue
            if path in registered:
                repo.remove_worktree(path)
            elif points_into(path, repo):  # its record is gone: an orphaned folder
                shutil.rmtree(path, ignore_errors=True)
            else:
                continue
            removed.append(path)
        repo.run("worktree", "prune")
    return removed


def _merged_elsewhere(repo: Repo) -> set[str]:
    """nova/* branches contained in some local branch outside nova/."""
    merged: set[str] = set()
    for ref in repo.refs("refs/heads/"):
        if not ref.startswith("refs/heads/nova/"):
            out = repo.git("for-each-ref", "--format=%(refname)", f"--merged={ref}", "refs/heads/nova/")
            merged.update(out.split())
    return merged


def remove_stale_locks(repo: Repo, min_age: float = 5.0) -> list[Path]:
    """Remove `index.lock` files left by a crashed git: older than `min_age` seconds, not open
    in any process, and no git process working in this repository. Returns what was removed."""
    dirs = [repo.common_dir, *(p for p in (repo.common_dir / "worktrees").glob("*") if p.is_dir())]
    locks = [d / "index.lock" for d in dirs if (d / "index.lock").exists()]
    locks = [lock for lock in locks if time.time() - lock.stat().st_mtime >= min_age]
    if not locks or _git_busy(repo, locks):
        return []
    for lock in locks:
        lock.unlink(missing_ok=True)
    return locks


def _git_busy(repo: Repo, locks: Sequence[Path]) -> bool:
    """True when a process holds one of `locks` open or a git process works in the repository
    (or when /proc cannot tell: then nothing is removed)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    lock_names = {str(lock) for lock in locks}
    places = [str(repo.root), str(repo.common_dir), *(str(w.path) for w in repo.worktrees())]
    for pid in (p for p in proc.iterdir() if p.name.isdigit() and int(p.name) != os.getpid()):
        is_git = False
        try:
            is_git = (pid / "comm").read_text().strip().startswith("git")
            if any(os.readlink(fd) in lock_names for fd in (pid / "fd").iterdir()):
                return True
            cwd = os.readlink(pid / "cwd") if is_git else ""
            if is_git and any(cwd == p or cwd.startswith(p + "/") for p in places):
                return True
        except FileNotFoundError:
            continue  # the process ended meanwhile
        except PermissionError:
            if is_git:  # another user's git: it might be working here
                return True
    return False
