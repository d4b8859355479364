"""Worktree isolation for a run: each task in its own git worktree and branch, its changes
committed there, and the results merged into the target at the end.

The supervisor sees only its Isolation interface; this module adapts the run's Workspaces
and the merge protocol to it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from novaproc.execution.guard import Ending
from novaproc.inputs.settings import Settings
from novaproc.inputs.taskfile import Task
from novaproc.isolation.clean import forget_run
from novaproc.isolation.interface import Finish, Landing
from novaproc.isolation.merge import merge_results
from novaproc.isolation.policy import MergePolicy
from novaproc.isolation.preflight import Preflight
from novaproc.isolation.worktree_pool import Workspaces
from novaproc.messages import LandingStarted, MergeDone, Phase


class WorktreeIsolation:
    """Tasks with isolation "worktree" run in worktrees; tasks with "none" in the checkout."""

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

    def _isolated(self, task: Task) -> bool:
        return (task.isolation or "worktree") == "worktree"

    def prepare(self, task: Task, parents: list[str]) -> Path:
        return self.ws.prepare(task.id, parents) if self._isolated(task) else self.root

    def finish(self, task: Task, ok: bool) -> Finish:
        if not self._isolated(task):
            return Finish()
        if not ok:
            self.ws.release(task.id, keep=True)
            return Finish()
        result = self.ws.commit(task.id, task.writes, task.label)
        if not result.undeclared:
            self.ws.release(task.id, keep=False)
            return Finish(result.commit)
        files = ", ".join(result.undeclared[:5]) + (" ..." if len(result.undeclared) > 5 else "")
        text = f"{task.id} changed files outside its writes: {files}"
        if self.settings.undeclared_writes == "fail":
            self.ws.release(task.id, keep=True)
            return Finish(problem=text + ' (undeclared_writes = "fail")')
        self.ws.release(task.id, keep=False)
        return Finish(result.commit, warning=text)

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
            conflict_check=s.conflict_check, announce=announce)
        outcome = merge_results(self.repo, self.run_id, results, policy, rerun)
        merge = MergeDone(outcome.commit, outcome.merged, dict(outcome.conflicts), dict(outcome.left_out),
                          outcome.culprit, outcome.reruns, outcome.waiting_branch, int(outcome.exit_code),
                          outcome.target, outcome.verified)
        return Landing(outcome.exit_code, outcome.notes, merge, outcome.stopped)

    def close(self) -> list[str]:
        return [f"kept for inspection: {path}" for path in self.ws.close()]
