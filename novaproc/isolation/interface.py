"""Where a task runs and what becomes of its changes, as the supervisor sees it: the Isolation
interface, the records it answers in, and InPlace, the isolation of tasks run in the checkout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from novaproc.errors import ExitCode, NovaError
from novaproc.inputs.taskfile import Task
from novaproc.messages import LandingStarted, MergeDone, Phase


class Isolation(Protocol):
    """Where a task runs and what becomes of its changes (in place, or a git worktree)."""

    def blocks(self, task: Task) -> bool:
        """Whether prepare, finish and abandon take a while for `task` (git): they are then called
        on a thread, beside other tasks' (never two of one task's at once); else they are instant."""

    def prepare(self, task: Task, parents: list[str]) -> Path:
        """The folder `task` runs in, holding the results `parents` (commits, in dependency
        order). Raises BaseConflict when two of them conflict, NovaError when it cannot be made
        otherwise: the task then fails with that message."""

    def finish(self, task: Task, ok: bool, exit_code: int | None = None) -> Finish:
        """After an attempt: keep its result (ok) or its folder for inspection (not ok), and
        say what may explain a failure (`exit_code`) that has to do with where it ran."""

    def abandon(self, task: Task) -> None:
        """A prepared folder whose task will not run (the run stopped meanwhile): given back,
        with nothing in it to keep."""

    def land(self, results: list[tuple[str, str]], rerun: Callable[[str, str], str | None],
             announce: Callable[[LandingStarted | Phase], None]) -> Landing:
        """Bring the results (task, commit), in dependency order, to the target; `rerun` runs a
        task again on a commit (the conflict protocol), `announce` is told, durably, before the
        user's checkout is touched."""

    def close(self) -> list[str]:
        """End of the run; returns notes such as folders kept for inspection."""


class BaseConflict(NovaError):
    """The results a task starts from conflict: the parent at `index` with those before it,
    merged so far into `merged`. The conflict protocol runs that parent again on `merged`."""

    def __init__(self, message: str, index: int, merged: str, files: tuple[str, ...]) -> None:
        super().__init__(message)
        self.index, self.merged, self.files = index, merged, files


@dataclass(frozen=True)
class Finish:
    commit: str | None = None  # the attempt's result, if it changed anything
    problem: str | None = None  # fails the task although its command succeeded
    warning: str | None = None


@dataclass(frozen=True)
class Landing:
    exit_code: ExitCode = ExitCode.OK
    notes: tuple[str, ...] = ()
    merge: MergeDone | None = None  # what merged, for the journal and the views
    stopped: bool = False  # the run's stop (Ctrl-C, SIGTERM) cut it short


class InPlace:
    """Tasks run in the repository itself (isolation "none"): nothing to keep or merge."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def blocks(self, task: Task) -> bool:
        return False

    def prepare(self, task: Task, parents: list[str]) -> Path:
        return self.root

    def finish(self, task: Task, ok: bool, exit_code: int | None = None) -> Finish:
        return Finish()

    def abandon(self, task: Task) -> None:
        pass

    def land(self, results: list[tuple[str, str]], rerun: Callable[[str, str], str | None],
             announce: Callable[[LandingStarted | Phase], None]) -> Landing:
        return Landing()

    def close(self) -> list[str]:
        return []
