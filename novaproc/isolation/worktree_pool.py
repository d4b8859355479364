"""Workspaces: the git worktree each task of a run works in, and the commit of its result.

Owns the layout (`<worktree_dir>/<run>-<task>` on branch `nova/<run>/<task>`), a pool of
worktrees reused from task to task so that isolation costs what changes rather than the size
of the repository (clean.py removes what finished or crashed runs left behind).

    prepare(task)  spare worktree moved to <run>-<task>, switched to the task's base (touching
                   only the files that differ), its folders stat'ed (changes.py), included files
                   brought in, setup run
    commit(task)   everything the task changed, committed on nova/<run>/<task>
    release(task)  kept for inspection, or cleaned (as git clean -ffdx, where the task could
                   have left something) and parked as a spare
    close()        spares removed; kept worktrees returned
"""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from novaproc.errors import EnvironmentFault, InternalError
from novaproc.execution.guard import UNSTOPPED, Ending
from novaproc.inputs.paths import GLOB_CHARS
from novaproc.isolation import changes, submodules
from novaproc.isolation.furnish import bring_in, ensure_private_dir, run_setup
from novaproc.isolation.interface import BaseConflict
from novaproc.isolation.records import Worktree
from novaproc.isolation.repo import IN_PROGRESS, Repo

# per-worktree state a task may leave that a checkout does not reset: such a worktree is
# removed rather than reused
_UNUSUAL = (*IN_PROGRESS, "config.worktree", "info", "sequencer")


def branch_name(run_id: str, task_id: str) -> str:
    return f"nova/{run_id}/{task_id}"


def commit_message(label: str, run_id: str, task_id: str) -> str:
    """A task's result commit says what it is, and of which run and task (for `clean`, and people)."""
    return f"{label}\n\nNova-Run: {run_id}\nNova-Task: {task_id}"


@dataclass(frozen=True, slots=True)
class TaskResult:
    """What a task changed: its result commit (None when it changed nothing) and the files."""

    task_id: str
    branch: str
    commit: str | None
    changed: tuple[str, ...]
    undeclared: tuple[str, ...]  # changed files outside the declared writes (none declared: empty)


@dataclass(slots=True)
class _PooledWorktree:
    """A pooled worktree and what the task now in it started from."""

    wt: Worktree
    start: str = ""
    result: str | None = None
    committed: bool = False
    unignored: tuple[str, ...] = ()  # included or setup-made paths `git add -A` would commit
    submodules: submodules.Populated = ()  # checked out by populate, for commit and depopulate
    snapshot: changes.Snapshot | None = None  # the folders at the task's start
    found: changes.Found | None = None  # what the commit staged, so release cleans only there


class Workspaces:
    """The worktrees of one run. Different tasks may be prepared, committed and released at
    once, on threads; one task's steps come one after another.

    Creation, moves and removals of worktrees are serialised per repository, across processes
    and threads, by an flock on a file in the repository's git common dir; checkouts are not.
    """

    def __init__(self, repo: Repo, *, run_id: str, worktree_dir: Path, base: str,
                 setup: str | None = None, include: Sequence[str] = (),
                 ending: Ending = UNSTOPPED, by_file: bool = True, setup_log: Path | None = None) -> None:
        self.dir = ensure_private_dir(Path(worktree_dir))
        self.ending = ending  # a stopping run does not wait for a worktree_setup
        self._repo = repo
        self.run_id, self.setup, self.include = run_id, setup, tuple(include)
        self.setup_log = setup_log  # the setup's output, for `novaproc logs RUN setup`
        self.by_file = by_file  # conflict_check = "file" (see Repo.merge)
        resolved = self._repo.commit_of(base)
        if resolved is None:
            raise EnvironmentFault(f"base {base!r} is not a commit of {self._repo.root}")
        self.base = resolved
        self._active: dict[str, _PooledWorktree] = {}
        self._kept: dict[str, _PooledWorktree] = {}
        self._spares: list[_PooledWorktree] = []
        self._spare_names = 0
        self._layouts: dict[str, changes.Layout] = {}  # by commit: most tasks share a few starts
        self._mutex = threading.Lock()  # guards the dicts and lists above, not the git work
        self._closed = False
        self._stack = ExitStack()
        self._stack.enter_context(self._repo.hold_run(run_id))  # tells `clean` this run is live

    def __enter__(self) -> Workspaces:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def path_of(self, task_id: str) -> Path:
        return self.dir / f"{self.run_id}-{task_id}"

    def branch_of(self, task_id: str) -> str:
        return branch_name(self.run_id, task_id)

    def prepare(self, task_id: str, parents: Sequence[str] = (), *, furnish: bool = True) -> Path:
        """A worktree for `task_id` holding the base merged with `parents` (result commits),
        plus the included files, after `worktree_setup` (unless not `furnish`: a task run on a
        cluster is furnished there). Raises BaseConflict when the parents conflict, SetupFailed
        when the setup fails (the worktree is then the task's: release it)."""
        if self._closed:
            raise InternalError(f"prepare({task_id!r}) after the run's workspaces were closed")
        with self._mutex:
            earlier = self._active.pop(task_id, None) or self._kept.pop(task_id, None)
        if earlier is not None:  # a retry
            self._recycle(earlier)
        start = self._start(task_id, parents)
        slot = self._take(task_id, start)
        if not furnish:
            return slot.wt.path
        brought = bring_in(self._repo.root, slot.wt.path, self.include)
        slot.unignored = tuple(set(brought) - self._repo.ignored(slot.wt, brought))
        if self.setup:
            run_setup(slot.wt.path, self.setup, self.ending, self.setup_log)
            # what the setup made (dependencies, build output) is not the task's result
            slot.unignored += self._repo.untracked(slot.wt)
        return slot.wt.path

    def commit(self, task_id: str, writes: Sequence[str] = (), message: str = "") -> TaskResult:
        """Commit everything the task changed (new, modified, deleted; .gitignore respected;
        included files left out) on its branch, on top of any commits it made itself."""
        slot = self._slot(task_id)
        repo, wt = self._repo, slot.wt
        text = commit_message(message or task_id, self.run_id, task_id)
        submodules.commit_inside(repo, wt.path, slot.submodules, text)  # writes there: a new commit
        slot.found = changes.stage(repo, wt, changes.find(repo, wt, slot.snapshot, slot.unignored),
                                   slot.unignored)
        result: str | None = repo.commit_index(wt, text)
        if result == slot.start:
            result = None
        else:
            repo.set_ref(f"refs/heads/{self.branch_of(task_id)}", result, reason=f"novaproc: {task_id}")
        slot.result, slot.committed = result, True
        changed = repo.changed(slot.start, result) if result else ()
        return TaskResult(task_id, self.branch_of(task_id), result, changed, undeclared(changed, writes))

    def release(self, task_id: str, *, keep: bool) -> None:
        """Done with the task's worktree: keep it for inspection, or clean it for the next task.
        The branch stays when it holds a result (or the worktree is kept), else it is deleted."""
        with self._mutex:
            slot = self._active.pop(task_id, None)
            if slot is not None and keep:
                self._kept[task_id] = slot
        if slot is None or keep:
            return
        self._recycle(slot)
        if slot.result is None:
            self._repo.delete_refs([f"refs/heads/{self.branch_of(task_id)}"])

    def close(self) -> list[Path]:
        """End of the run: remove the spare worktrees; return the kept ones (and any never
        released). Idempotent. Called once no thread works on them any more."""
        with self._repo.worktree_lock():
            for slot in self._spares:
                self._repo.remove_worktree(slot.wt.path)
            self._spares.clear()
            self._repo.run("worktree", "prune")
        self._stack.close()
        self._closed = True
        return [s.wt.path for s in (*self._kept.values(), *self._active.values())]

    # -- the pool -----------------------------------------------------------------------------

    def _slot(self, task_id: str) -> _PooledWorktree:
        try:
            return self._active[task_id]
        except KeyError:
            raise InternalError(f"task {task_id!r} has no prepared worktree") from None

    def _start(self, task_id: str, parents: Sequence[str]) -> str:
        start = self.base
        for index, parent in enumerate(parents):
            commit = self._repo.commit_of(parent)
            if commit is None:
                raise InternalError(f"parent {parent!r} of task {task_id!r} is not a commit")
            merged = self._repo.merge(start, commit, f"nova: base of {task_id} (run {self.run_id})",
                                      by_file=self.by_file)
            if merged.commit is None:
                raise BaseConflict(f"the results task {task_id} builds on conflict in "
                                   f"{', '.join(merged.conflicts)}", index, start, merged.conflicts)
            start = merged.commit
        return start

    def _take(self, task_id: str, start: str) -> _PooledWorktree:
        """A spare worktree (or a new one) at the task's path, switched to `start`; the task's
        from then on, so that one that fails here is kept for inspection."""
        path, branch = self.path_of(task_id), self.branch_of(task_id)
        with self._repo.worktree_lock():
            self._clear(path)
            reused = self._reuse(path)
            # a new one's record alone under the lock: the pool's first checkouts run side by side
            slot = reused or _PooledWorktree(self._repo.add_worktree(path, start, branch, checkout=False),
                                             start)
        with self._mutex:
            self._active[task_id] = slot
        if reused is None:
            self._repo.in_worktree(slot.wt, "reset", "-q", "--hard")  # as `worktree add` checks out
        else:
            self._switch(slot, branch, start)
        self._repo.fill_lfs(path)
        slot.submodules = submodules.populate(self._repo, path)
        # before anything is brought in or set up: that is for the clean-up to find
        slot.snapshot = changes.Snapshot.take(slot.wt, self._layout(start))
        return slot

    def _switch(self, slot: _PooledWorktree, branch: str, start: str) -> None:
        """Move a spare (clean: `_recycle` made it so) to `start` on `branch`. `reset --keep`
        compares trees through the index's cache-tree and rewrites only the files that differ;
        a checkout would first lstat every file of the repository."""
        repo, wt = self._repo, slot.wt
        try:
            repo.in_worktree(wt, "reset", "-q", "--keep", start)
            repo.in_worktree(wt, "update-ref", "-m", f"novaproc: {branch}", f"refs/heads/{branch}", start)
            repo.in_worktree(wt, "symbolic-ref", "HEAD", f"refs/heads/{branch}")
        except EnvironmentFault:  # whatever stood in its way, a forced checkout overwrites
            repo.in_worktree(wt, "checkout", "-q", "-f", "--no-track", "-B", branch, start)
        slot.start = start

    def _layout(self, commit: str) -> changes.Layout:
        with self._mutex:
            layout = self._layouts.get(commit)
        if layout is None:  # two tasks starting together may both make it: the same, once kept
            layout = changes.Layout.of(self._repo, commit)
            with self._mutex:
                if len(self._layouts) >= 8:
                    del self._layouts[next(iter(self._layouts))]
                self._layouts[commit] = layout
        return layout

    def _reuse(self, path: Path) -> _PooledWorktree | None:
        while True:
            with self._mutex:
                if not self._spares:
                    return None
                slot = self._spares.pop()
            try:
                slot.wt = self._repo.move_worktree(slot.wt, path)
                return _PooledWorktree(slot.wt)
            except EnvironmentFault:
                self._repo.remove_worktree(slot.wt.path)

    def _clear(self, path: Path) -> None:
        """Make room at `path`: a leftover worktree of this repository (a crashed attempt of
        a resumed run) is removed; anything else there is refused."""
        if not (path.exists() or path.is_symlink()):
            return
        if path in {e.path for e in self._repo.worktrees()} or points_into(path, self._repo):
            self._repo.remove_worktree(path)
            if not path.exists():
                return
        raise EnvironmentFault(f"{path} exists and is not a worktree of {self._repo.root}; "
                               "remove it, or set worktree_dir (NOVA_WORKTREE_DIR) elsewhere")

    def _recycle(self, slot: _PooledWorktree) -> None:
        """Clean a worktree back to its commit and park it as a spare; if it is in a state a
        cleanup cannot undo, remove it instead."""
        repo, wt = self._repo, slot.wt
        try:
            if self._unusual(wt):
                raise EnvironmentFault("unusual worktree state")
            submodules.depopulate(repo, wt.path, slot.submodules)  # git moves no worktree holding one
            if not slot.committed:
                repo.in_worktree(wt, "reset", "-q", "--hard")
            changes.clean(repo, wt, slot.found if slot.committed else None)
            repo.in_worktree(wt, "update-ref", "--no-deref", "HEAD", "HEAD")  # frees the branch
            with self._mutex:
                self._spare_names += 1
                spare = self.dir / f"{self.run_id}-.spare-{self._spare_names}"
            with repo.worktree_lock():
                slot.wt = repo.move_worktree(wt, spare)
            with self._mutex:
                self._spares.append(_PooledWorktree(slot.wt))
        except EnvironmentFault:
            with repo.worktree_lock():
                repo.remove_worktree(wt.path)

    @staticmethod
    def _unusual(wt: Worktree) -> bool:
        gitfile = wt.path / ".git"
        try:
            intact = gitfile.is_file() and gitfile.read_text().strip() == f"gitdir: {wt.admin}"
        except OSError:
            intact = False
        return not intact or any((wt.admin / name).exists() for name in _UNUSUAL)


def undeclared(changed: Sequence[str], writes: Sequence[str]) -> tuple[str, ...]:
    """The files in `changed` that no declared write covers ("." or no writes: none)."""
    declared = [w.strip().rstrip("/") for w in writes if not w.startswith("/")]
    if not writes or any(w in (".", "") for w in declared):
        return ()
    return tuple(f for f in changed if not any(_covers(w, f) for w in declared))


def _covers(pattern: str, path: str) -> bool:
    if GLOB_CHARS & set(pattern):
        parts = path.split("/")
        return any(fnmatch.fnmatchcase("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1))
    return path == pattern or path.startswith(pattern + "/")


def points_into(path: Path, repo: Repo) -> bool:
    """True when `path` holds a .git file naming a worktree record of `repo`."""
    try:
        text = (path / ".git").read_text().strip()
    except OSError:
        return False
    return text.startswith(f"gitdir: {repo.common_dir}/worktrees/")
