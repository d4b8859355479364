"""A task's checkout on a cluster's worker, the far side of `shipping`: this machine's cached
clone of the run's repository gets the objects the task starts from (a bundle), a worktree at
its start commit, furnished as the run says; afterwards its changes become one commit, sent back
as a bundle thin against the start.

    cache/<repo>/clone      a repository without a checkout, kept from task to task and run to run
    cache/<repo>/wt-<pid>-<n>   one task's worktree; removed after it, or swept once <pid> is gone
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from novaproc.errors import ObjectsMissing
from novaproc.execution.guard import UNSTOPPED, Ending
from novaproc.fsio import private_dir
from novaproc.isolation.bundles import make_bundle, take_bundle
from novaproc.isolation.furnish import run_setup
from novaproc.isolation.repo import Repo, Worktree, flock
from novaproc.messages import Parcel

CACHE = Path(tempfile.gettempdir()) / f"novaproc-cluster-{os.getuid()}"


@dataclass
class Spot:
    """One task's worktree on this machine."""

    repo: Repo
    wt: Worktree
    parcel: Parcel
    log: Path
    unignored: tuple[str, ...] = field(default_factory=tuple)  # furnished, never the task's result

    @property
    def folder(self) -> Path:
        return self.wt.path

    def furnish(self, ending: Ending = UNSTOPPED) -> None:
        """The included files, then worktree_setup (its output heads the task's log)."""
        if self.parcel.include:
            with tarfile.open(fileobj=io.BytesIO(self.parcel.include)) as tar:
                names = [m.name for m in tar.getmembers() if "/" not in m.name.rstrip("/")]
                tar.extractall(self.folder, filter="tar")
            self.unignored = tuple(set(names) - self.repo.ignored(self.wt, names))
        if self.parcel.setup:
            run_setup(self.folder, self.parcel.setup, ending, self.log)
            self.unignored += self.repo.untracked(self.wt)

    def collect(self) -> tuple[str | None, bytes | None]:
        """What the task changed, committed on top of what it committed itself, as (commit,
        bundle thin against the start); (None, None) when it changed nothing."""
        repo, wt = self.repo, self.wt
        repo.in_worktree(wt, "add", "-A", "--", ".", *(f":(exclude,literal,top){p}" for p in self.unignored))
        tree = repo.in_worktree(wt, "write-tree").strip()
        head, head_tree = repo.in_worktree(wt, "rev-parse", "HEAD", "HEAD^{tree}").split()
        result = head if tree == head_tree else repo.commit_tree(tree, [head], self.parcel.message)
        if result == self.parcel.start:
            return None, None
        return result, make_bundle(repo, result, self.parcel.start)


@contextmanager
def place(parcel: Parcel, tag: str) -> Iterator[Spot]:
    """A worktree for the task of `parcel`, removed afterwards. Raises ObjectsMissing when this machine's
    clone lacks what the parcel's bundle builds on."""
    home = CACHE / parcel.repo
    problem = private_dir(home, parents=True)
    if problem:
        raise OSError(f"refusing {home}: it {problem}")
    path = home / f"wt-{os.getpid()}-{tag}"
    with flock(home / "lock"):  # one writer of the clone at a time, across this machine's workers
        repo = _clone(home)
        repo.adopt_identity(parcel.identity)
        _sweep(repo, home)
        if repo.missing([parcel.start]) and not _receive(repo, parcel):
            raise ObjectsMissing(f"{parcel.start} is not in {repo.root}")
        wt = repo.add_worktree(path, parcel.start)
    log = home / f"log-{os.getpid()}-{tag}"
    try:
        yield Spot(repo, wt, parcel, log)
    finally:
        with flock(home / "lock"):
            repo.remove_worktree(path)
        log.unlink(missing_ok=True)


def _receive(repo: Repo, parcel: Parcel) -> bool:
    """Store the parcel's objects; whether the start commit is here now."""
    return parcel.bundle is not None and take_bundle(repo, parcel.bundle) and not repo.missing([parcel.start])


def _clone(home: Path) -> Repo:
    clone = home / "clone"
    return Repo(clone) if (clone / ".git").is_dir() else Repo.init(clone)


def _sweep(repo: Repo, home: Path) -> None:
    """Remove the worktrees and logs of processes gone (a killed worker's): nothing stays behind."""
    for entry in home.iterdir():
        kind, _, rest = entry.name.partition("-")
        pid = rest.partition("-")[0]
        if kind in ("wt", "log") and pid.isdigit() and not _alive(int(pid)):
            if kind == "wt":
                repo.remove_worktree(entry)
            else:
                entry.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

