"""What a task must hold while it runs, beyond a slot, as the supervisor sees it (Gate), and
LockGate: a run's tasks holding their path locks and resources machine-wide.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from novaproc.inputs.kinds import SERIAL_KINDS
from novaproc.inputs.taskfile import Task
from novaproc.locking.manager import Blocked, Grant, LockManager, LockRequest, task_request


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
