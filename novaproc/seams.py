"""What the supervisor needs from the rest of a run, as narrow interfaces: where a task runs
and what becomes of its changes (Isolation), and what it must hold while it runs (Gate), with
the records they answer in, the in-place default and the machine-wide lock gate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import ExitCode
from .kinds import SERIAL_KINDS
from .locks import Blocked, Grant, LockManager, LockRequest, task_request
from .taskfile import Task


class Isolation(Protocol):
    """Where a task runs and what becomes of its changes (in place, or a git worktree)."""

    def prepare(self, task: Task, parents: list[str]) -> Path:
        """The folder `task` runs in, holding the results `parents` (commits). Raises NovaError
        when it cannot be made: the task then fails with that message."""

    def finish(self, task: Task, ok: bool) -> Finish:
        """After an attempt: keep its result (ok) or its folder for inspection (not ok)."""

    def land(self, results: list[tuple[str, str]], rerun: Callable[[str, str], str | None]) -> Landing:
        """Bring the results (task, commit), in dependency order, to the target."""

    def close(self) -> list[str]:
        """End of the run; returns notes such as folders kept for inspection."""


@dataclass(frozen=True)
class Finish:
    commit: str | None = None  # the attempt's result, if it changed anything
    problem: str | None = None  # fails the task although its command succeeded
    warning: str | None = None


@dataclass(frozen=True)
class Landing:
    exit_code: ExitCode = ExitCode.OK
    notes: tuple[str, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)
    stopped: bool = False  # the run's stop (Ctrl-C, SIGTERM) cut it short


class InPlace:
    """Tasks run in the repository itself (isolation "none"): nothing to keep or merge."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def prepare(self, task: Task, parents: list[str]) -> Path:
        return self.root

    def finish(self, task: Task, ok: bool) -> Finish:
        return Finish()

    def land(self, results: list[tuple[str, str]], rerun: Callable[[str, str], str | None]) -> Landing:
        return Landing()

    def close(self) -> list[str]:
        return []


class Gate(Protocol):
    """Something a task must hold while it runs, beyond slots: path locks, for instance."""

    def try_acquire(self, task: Task) -> str | None:
        """Take what `task` needs now and return None, or return why it must wait."""

    def release(self, task: Task) -> None: ...

    def cancel(self, task: Task) -> None:
        """`task` no longer waits (the run stops): give up its place in line."""

    def fileno(self) -> int | None:
        """A descriptor that becomes readable when a waiting task may try again, if any."""


class LockGate:
    """A run's tasks hold their path locks and resources machine-wide while they run, so
    separate novaproc processes (and `novaproc lock`) queue instead of colliding."""

    def __init__(self, manager: LockManager, root: Path, run_id: str,
                 capacities: Mapping[str, int]) -> None:
        self.manager, self.root, self.run_id, self.capacities = manager, root, run_id, capacities
        self._requests: dict[str, LockRequest | None] = {}
        self._grants: dict[str, Grant] = {}

    def _request(self, task: Task) -> LockRequest | None:
        if task.id not in self._requests:
            resources = dict(task.resources)
            if task.kind in SERIAL_KINDS:
                resources[str(task.kind)] = 1
            wanted = task.writes or task.reads or resources
            self._requests[task.id] = task_request(
                f"{self.run_id}/{task.id}", task.id, root=str(self.root), writes=task.writes,
                reads=task.reads, resources=resources, capacities=self.capacities) if wanted else None
        return self._requests[task.id]

    def try_acquire(self, task: Task) -> str | None:
        request = self._request(task)
        if request is None:
            return None  # nothing to lock: no cost
        answer = self.manager.try_acquire(request)
        if isinstance(answer, Blocked):
            return answer.describe(str(self.root))
        self._grants[task.id] = answer
        return None

    def release(self, task: Task) -> None:
        grant = self._grants.pop(task.id, None)
        if grant is not None:
            self.manager.release(grant)

    def cancel(self, task: Task) -> None:
        request = self._requests.get(task.id)
        if request is not None and task.id not in self._grants:
            self.manager.cancel(request)  # else it would hold back other processes' tasks

    def fileno(self) -> int | None:
        return self.manager.fileno()  # rung when a lock we wait for is released
