"""What a task starts from: the results of the tasks it waits for, in dependency order, and the
job that runs it there. When those results conflict, the later of them runs again on top of the
earlier ones (as one by one it would have) and the task starts once it has: BaseRebuilds keeps
the book of who waits for which re-run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from novaproc.inputs.settings import Settings, on_cluster
from novaproc.inputs.taskfile import Task
from novaproc.messages import Job
from novaproc.planning.graph import TaskGraph


def parents_of(graph: TaskGraph, tid: str, commit_of: Callable[[str], str | None],
               order: Mapping[str, int]) -> list[tuple[str, str]]:
    """The results `tid` starts from, (task, commit) in dependency `order`: those of what it
    waits for, looking through tasks that produced none (they changed nothing, or failed
    before an order-only edge). `commit_of` is asked only about those: a look, not a copy of
    every task's, per task started."""
    found: dict[str, str] = {}
    seen: set[str] = set()
    stack = list(graph.preds[tid])
    while stack:
        pred = stack.pop()
        if pred in seen:
            continue
        seen.add(pred)
        commit = commit_of(pred)
        if commit:
            found[pred] = commit
        else:
            stack.extend(graph.preds[pred])
    return sorted(found.items(), key=lambda item: order[item[0]])


def job_for(task: Task, attempt: int, folder: Path, run_id: str, log_path: Path, settings: Settings) -> Job:
    """One attempt of `task` run in `folder` (its `cwd` inside), as a worker needs it."""
    cwd = folder / task.cwd if task.cwd else folder
    common = {"task_id": task.id, "attempt": attempt, "log_path": str(log_path), "cwd": str(cwd),
              "env": {**task.env, "NOVA_RUN_ID": run_id}, "kill_grace": settings.kill_grace,
              "folder": str(folder), "remote": on_cluster(task, settings)}
    if task.call is not None:
        return Job(**common, call=task.call, args=task.args, kwargs=task.kwargs)
    if isinstance(task.cmd, str):
        return Job(**common, shell=task.cmd)
    return Job(**common, argv=task.cmd)


@dataclass
class BaseRebuilds:
    waiting: dict[str, str] = field(default_factory=dict)  # task -> the parent it waits for
    pending: dict[str, str] = field(default_factory=dict)  # parent to run again -> on which commit
    running: dict[str, str] = field(default_factory=dict)  # parent running again -> on which commit

    def ask(self, task: str, parent: str, base: str) -> None:
        """`task` waits until `parent` ran again on `base` (unless a re-run is asked already)."""
        self.waiting[task] = parent
        if parent not in self.running:
            self.pending.setdefault(parent, base)

    def start(self, parent: str) -> str:
        """`parent` starts again now; the commit it runs on."""
        base = self.running[parent] = self.pending.pop(parent)
        return base

    def done(self, parent: str) -> tuple[str, list[str]]:
        """`parent` ended its re-run: the commit it ran on, and the tasks that waited for it."""
        base = self.running.pop(parent)
        waiters = [t for t, p in self.waiting.items() if p == parent]
        for task in waiters:
            del self.waiting[task]
        return base, waiters

    def drop(self) -> list[str]:
        """The run stops: nothing more runs again; the tasks that waited."""
        waiters = list(self.waiting)
        self.waiting.clear()
        self.pending.clear()
        return waiters
