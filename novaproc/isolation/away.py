"""A task's checkout on a cluster's worker, the far side of `shipping`: this machine's cached
clone of the run's repository gets the objects the task starts from (a bundle), a worktree at
its start commit, furnished as the run says; afterwards its changes become one commit, sent back
as a bundle thin against the start.

    cache/<repo>/clone      a repository without a checkout, kept from task to task and run to run
    cache/<repo>/wt-<pid>-<n>   a worktree of worker process <pid>, kept from task to task of a run;
                                removed when the run ends, or swept once <pid> is gone
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from novaproc.errors import EnvironmentFault, ObjectsMissing
from novaproc.execution.guard import UNSTOPPED, Ending
from novaproc.fsio import private_dir
from novaproc.isolation.bundles import make_bundle, take_bundle
from novaproc.isolation.furnish import run_setup
from novaproc.isolation.records import Worktree
from novaproc.isolation.repo import Repo, flock
from novaproc.messages import Parcel

CACHE = Path(tempfile.gettempdir()) / f"novaproc-cluster-{os.getuid()}"
# this process's (a Dask worker's) clones and spare worktrees; its threads share them
_mutex = threading.Lock()
_repos: dict[Path, Repo] = {}
_spares: dict[Path, list[Worktree]] = {}
_made = [0]


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
        result = self.repo.commit_worktree(self.wt, self.parcel.message, self.unignored)
        if result == self.parcel.start:
            return None, None
        return result, make_bundle(self.repo, result, self.parcel.start)


@contextmanager
def place(parcel: Parcel, tag: str) -> Iterator[Spot]:
    """A worktree for the task of `parcel`, cleaned and kept for the next task afterwards.
    Raises ObjectsMissing when this machine's clone lacks what the parcel's bundle builds on."""
    home = CACHE / parcel.repo
    problem = private_dir(home, parents=True)
    if problem:
        raise OSError(f"refusing {home}: it {problem}")
    with flock(home / "lock"):  # one writer of the clone at a time, across this machine's workers
        repo = _clone(home)
        repo.adopt_identity(parcel.identity)
        _sweep(repo, home)
        if repo.missing([parcel.start]) and not _receive(repo, parcel):
            raise ObjectsMissing(f"{parcel.start} is not in {repo.root}")
        wt = _take(repo, home, parcel.start)
    log = home / f"log-{os.getpid()}-{tag}"
    try:
        yield Spot(repo, wt, parcel, log)
    finally:
        _give_back(repo, home, wt)
        log.unlink(missing_ok=True)


def tidy() -> None:
    """Remove this process's spare worktrees (the supervisor's run ends): nothing stays behind."""
    with _mutex:
        spares = [(home, wt) for home, wts in _spares.items() for wt in wts]
        _spares.clear()
    for home, wt in spares:
        with flock(home / "lock"):
            _clone(home).remove_worktree(wt.path)


def _take(repo: Repo, home: Path, start: str) -> Worktree:
    """A spare worktree of this process switched to `start` (a checkout changes only what
    differs), or a new one. Called under the clone's lock."""
    with _mutex:
        spare = _spares.get(home, []).pop() if _spares.get(home) else None
        _made[0] += 1
        path = home / f"wt-{os.getpid()}-{_made[0]}"
    if spare is not None:
        try:
            repo.in_worktree(spare, "checkout", "-q", "-f", "--detach", start)
            return spare
        except EnvironmentFault:
            repo.remove_worktree(spare.path)
    return repo.add_worktree(path, start)


def _give_back(repo: Repo, home: Path, wt: Worktree) -> None:
    """Clean the worktree to its commit and keep it for this process's next task."""
    try:
        repo.in_worktree(wt, "reset", "-q", "--hard")
        repo.in_worktree(wt, "clean", "-q", "-ffdx")
    except EnvironmentFault:
        with flock(home / "lock"):
            repo.remove_worktree(wt.path)
        return
    with _mutex:
        _spares.setdefault(home, []).append(wt)


def _receive(repo: Repo, parcel: Parcel) -> bool:
    """Store the parcel's objects; whether the start commit is here now."""
    return parcel.bundle is not None and take_bundle(repo, parcel.bundle) and not repo.missing([parcel.start])


def _clone(home: Path) -> Repo:
    """This machine's clone for `home`, made on first use; one Repo per process."""
    with _mutex:
        repo = _repos.get(home)
    if repo is None:
        clone = home / "clone"
        repo = Repo(clone) if (clone / ".git").is_dir() else Repo.init(clone)
        with _mutex:
            _repos[home] = repo
    return repo


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

