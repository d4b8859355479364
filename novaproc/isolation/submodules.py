"""Submodules in a task's or verify's worktree, as the user's checkout has them.

A submodule the user's checkout has initialised (its repository is in <common dir>/modules/<name>)
is checked out in the worktree at the commit the worktree's tree records, as a linked worktree of
that same module repository: nothing is cloned or fetched, objects are shared, and a commit made
inside it is in the user's repository when the result lands. A submodule the checkout has not
initialised stays an empty folder, as it is there.

Git refuses to move or remove a worktree that holds a populated submodule, so `depopulate` comes
before either, and before a checkout or `clean -ffdx` that would delete one's files from under it.
"""

from __future__ import annotations

import os
import posixpath
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from novaproc.isolation.repo import Repo

_GITLINK = "160000"


Populated = tuple[tuple[str, str], ...]  # (name, path) of each submodule checked out


def populate(repo: Repo, path: Path) -> Populated:
    """Check out, in the worktree at `path` (just checked out: its .gitmodules is the commit's,
    not a task's), each submodule the user's checkout has initialised; those populated. Only
    they are touched later: a task may rewrite .gitmodules to point anywhere."""
    done = []
    for name, sub in _declared(repo, path):
        module = repo.common_dir / "modules" / name
        commit = _gitlink(repo, path, sub)
        if commit is None or not (module / "HEAD").is_file() or not _ours(repo, path, name, sub, fresh=True):
            continue
        code, _, _ = repo.run("worktree", "add", "-q", "--detach", "--force", str(path / sub), commit,
                              cwd=module)
        if code == 0:  # a commit the module lacks stays unpopulated, as `git submodule update` would
            done.append((name, sub))
    return tuple(done)


def depopulate(repo: Repo, path: Path, populated: Populated) -> None:
    """Remove the submodules' checkouts from the worktree at `path`, leaving their empty folders
    (as an uninitialised submodule has) so that the worktree's tree is unchanged."""
    for name, sub in populated:
        if not _ours(repo, path, name, sub):
            continue  # gone, or no longer what populate made: nothing of ours to remove
        target, module = path / sub, repo.common_dir / "modules" / name
        code, _, _ = repo.run("worktree", "remove", "--force", "--force", str(target), cwd=module)
        if code != 0:
            shutil.rmtree(target, ignore_errors=True)
            repo.run("worktree", "prune", cwd=module)
        target.mkdir(parents=True, exist_ok=True)


def commit_inside(repo: Repo, path: Path, populated: Populated, message: str) -> tuple[str, ...]:
    """Commit what a task left uncommitted inside each populated submodule, so its writes there
    become a new submodule commit the worktree's tree records; the submodules committed. The
    commit is kept by a ref of the module repository (nothing else refers to it there)."""
    committed = []
    for name, sub in populated:
        inside = path / sub
        if not _ours(repo, path, name, sub) or not repo.git("status", "--porcelain", cwd=inside).strip():
            continue
        repo.git("add", "-A", cwd=inside)
        repo.git("commit", "-q", "--no-verify", "-m", message, cwd=inside, env=repo.identity())
        head = repo.git("rev-parse", "HEAD", cwd=inside).strip()
        repo.git("update-ref", f"refs/nova/kept/{head}", head, cwd=inside)
        committed.append(sub)
    return tuple(committed)


def _ours(repo: Repo, path: Path, name: str, sub: str, *, fresh: bool = False) -> bool:
    """`sub` lies inside the worktree (no symlink leads it out) and, unless `fresh`, is the
    linked worktree of the module repository that populate made there."""
    real_root, target = os.path.realpath(path), os.path.realpath(path / sub)
    if not target.startswith(real_root + os.sep):
        return False
    if fresh:
        return True
    try:
        gitdir = (Path(target) / ".git").read_text().strip().removeprefix("gitdir: ")
    except OSError:
        return False
    module = os.path.realpath(repo.common_dir / "modules" / name / "worktrees")
    return os.path.realpath(gitdir).startswith(module + os.sep)


def _declared(repo: Repo, path: Path) -> list[tuple[str, str]]:
    """(name, path) of each submodule .gitmodules declares in the worktree at `path`."""
    if not (path / ".gitmodules").is_file():
        return []
    code, out, _ = repo.run("config", "-z", "--file", str(path / ".gitmodules"), "--get-regexp",
                            r"^submodule\..*\.path$", cwd=path, retries=0)
    if code != 0:
        return []
    found = []
    for entry in out.split("\0"):
        key, _, sub = entry.partition("\n")
        name = key.removeprefix("submodule.").removesuffix(".path")
        if key and _inside(sub) and _inside(name):  # a task may have written .gitmodules
            found.append((name, sub))
    return found


def _inside(relative: str) -> bool:
    return bool(relative) and not posixpath.isabs(relative) \
        and not posixpath.normpath(relative).startswith("..")


def _gitlink(repo: Repo, path: Path, sub: str) -> str | None:
    """The commit the worktree's index records for submodule `sub`, None when it is not one."""
    out = repo.git("ls-files", "-s", "--", sub, cwd=path).split()
    return out[1] if len(out) >= 2 and out[0] == _GITLINK else None
