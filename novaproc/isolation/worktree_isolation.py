"""Worktree isolation for a run: each task in its own git worktree and branch, its changes
committed there, and the results merged into the target at the end.

The supervisor sees only its Isolation interface; this module adapts the run's Workspaces
and the merge protocol to it.
"""

from __future__ import annotations

import posixpath
import shlex
import threading
from collections.abc import Callable
from pathlib import Path

from novaproc.execution.guard import Ending
from novaproc.inputs.settings import Settings, on_cluster
from novaproc.inputs.taskfile import Task
from novaproc.isolation.clean import forget_run
from novaproc.isolation.interface import Finish, Landing
from novaproc.isolation.merge import merge_results
from novaproc.isolation.policy import MergePolicy
from novaproc.isolation.preflight import Preflight
from novaproc.isolation.repo import Repo
from novaproc.isolation.worktree_pool import Workspaces
from novaproc.messages import LandingStarted, MergeDone, Phase


class WorktreeIsolation:
    """Tasks with isolation "worktree" run in worktrees; tasks with "none" in the checkout.
    Different tasks may be prepared, finished and abandoned at once, on threads."""

    def __init__(self, checked: Preflight, settings: Settings, run_id: str, log_dir: Path, *,
                 resumed: bool = False, stop: Callable[[], bool] | None = None) -> None:
        ending = Ending(stop, settings.kill_grace)
        self.repo, self.root = checked.repo, checked.root
        self.target, self.base = checked.target, checked.base
        if resumed:  # a crashed supervisor's worktrees go; its results stay on their branches
            forget_run(self.repo, worktree_dir=Path(settings.worktree_dir), run_id=run_id)
        self.settings, self.run_id, self.log_dir = settings, run_id, log_dir
        self.ws = Workspaces(self.repo, run_id=run_id, worktree_dir=Path(settings.worktree_dir),
                             base=self.base, setup=settings.worktree_setup,
                             include=settings.worktree_include, ending=ending,
                             by_file=settings.conflict_check == "file", setup_log=log_dir / "setup.log")
        self.ending = ending
        self._undeclared: dict[str, list[str]] = {}  # file edited outside writes -> the tasks
        self._told = threading.Lock()  # guards _undeclared, which tasks finishing at once add to

    def _isolated(self, task: Task) -> bool:
        return (task.isolation or "worktree") == "worktree"

    def blocks(self, task: Task) -> bool:
        return self._isolated(task)

    def prepare(self, task: Task, parents: list[str]) -> Path:
        if not self._isolated(task):
            return self.root
        return self.ws.prepare(task.id, parents, furnish=not on_cluster(task, self.settings))

    def finish(self, task: Task, ok: bool, exit_code: int | None = None) -> Finish:
        if not self._isolated(task):
            return Finish()
        if not ok:
            self.ws.release(task.id, keep=True)
            hint = missing_program_hint(self.repo, task) if exit_code == NOT_FOUND else None
            return Finish(warning=hint)
        result = self.ws.commit(task.id, task.writes, task.label)
        if not result.undeclared:
            self.ws.release(task.id, keep=False)
            return Finish(result.commit)
        with self._told:
            new = [f for f in result.undeclared if f not in self._undeclared]
            for f in result.undeclared:  # told once a file; a file many tasks edit, once at the end
                self._undeclared.setdefault(f, []).append(task.id)
        files = ", ".join(result.undeclared[:5]) + (" ..." if len(result.undeclared) > 5 else "")
        text = f"{task.id} changed files outside its writes: {files}"
        if self.settings.undeclared_writes == "fail":
            self.ws.release(task.id, keep=True)
            return Finish(problem=text + ' (undeclared_writes = "fail")')
        self.ws.release(task.id, keep=False)
        return Finish(result.commit, warning=text if new else None)

    def abandon(self, task: Task) -> None:
        if self._isolated(task):
            self.ws.release(task.id, keep=False)

    def land(self, results: list[tuple[str, str]], rerun: Callable[[str, str], str | None],
             announce: Callable[[LandingStarted | Phase], None]) -> Landing:
        if self.settings.merge == "off" or not results:
            branches = [f"nova/{self.run_id}/{t}" for t, _ in results]
            notes = (f"merge is off: results stay on {', '.join(branches)}",) if branches else ()
            return Landing(notes=notes)
        s = self.settings
        policy = MergePolicy(
            self.target or "HEAD", self.base, on_conflict=s.on_conflict, verify=s.verify,
            worktree_dir=Path(s.worktree_dir), setup=s.worktree_setup, include=s.worktree_include,
            verify_log=self.log_dir / "verify.log", setup_log=self.log_dir / "setup.log",
            ending=self.ending, verify_retries=s.verify_retries,
            conflict_check=s.conflict_check, announce=announce, history=s.history)
        outcome = merge_results(self.repo, self.run_id, results, policy, rerun)
        merge = MergeDone(outcome.commit, outcome.merged, dict(outcome.conflicts), dict(outcome.left_out),
                          outcome.culprit, outcome.reruns, outcome.waiting_branch, int(outcome.exit_code),
                          outcome.target, outcome.verified)
        return Landing(outcome.exit_code, outcome.notes, merge, outcome.stopped)

    def close(self) -> list[str]:
        shared = [_shared_note(f, tasks) for f, tasks in self._undeclared.items() if len(tasks) > 1]
        return [*shared, *(f"kept for inspection: {path}" for path in self.ws.close())]


def _shared_note(file: str, tasks: list[str]) -> str:
    """One line for a file many tasks edited without declaring it, and what makes them queue."""
    named = ", ".join(tasks[:3]) + (", ..." if len(tasks) > 3 else "")
    return (f"{len(tasks)} tasks changed {file} without declaring it ({named}): "
            f'writes = ["{file}"] on them would make them queue rather than merge their edits')


NOT_FOUND = 127  # the shell's exit code for a command it cannot find


def missing_program_hint(repo: Repo, task: Task) -> str | None:
    """A program the task names by a path (`./tools/x`, `node_modules/.bin/y`) that the user's
    checkout has among its untracked or ignored files: a worktree holds only tracked files."""
    program = _program(task.cmd)
    if program is None or "/" not in program or program.startswith("/"):
        return None
    path = posixpath.normpath(posixpath.join(task.cwd or ".", program))
    if path.startswith("..") or not (repo.root / path).exists() or repo.tracked(path):
        return None
    top = path.split("/")[0]
    return (f"{task.id}: {program} was not found in its worktree, which holds only tracked files; "
            f"your checkout has it untracked or ignored: bring it in with worktree_include = "
            f'["{top}"] (in nova.toml or [run])')


def _program(cmd: str | tuple[str, ...] | None) -> str | None:
    if isinstance(cmd, tuple):
        return cmd[0] if cmd else None
    try:
        words = shlex.split(cmd or "")
    except ValueError:
        return None
    return next((w for w in words if "=" not in w.split("/")[0]), None)  # past VAR=value
