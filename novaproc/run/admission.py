"""Admission: whether a ready task may start now, and why it waits when not. Slots (a task
takes `cpu` of them), named resources, the load throttle and the gate (path locks) decide,
in that order; the supervisor's loop only asks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from novaproc.execution.throttle import Throttle
from novaproc.inputs.taskfile import Task
from novaproc.locking.gate import Gate


class WaitKind(StrEnum):
    RESOURCE = "resource"
    THROTTLE = "throttle"  # the load: no other task may start either
    LOCK = "lock"


@dataclass(frozen=True, slots=True)
class Wait:
    """Why a ready task may not start now."""

    kind: WaitKind
    reason: str


class Admission:
    """The slots, resources and locks that running tasks hold, and the rule for one more."""

    def __init__(self, slots: int, capacities: Mapping[str, int], throttle: Throttle,
                 gate: Gate | None = None) -> None:
        self.slots, self.capacities, self.throttle, self.gate = slots, capacities, throttle, gate
        self.used = 0
        self._held: dict[str, int] = {}

    def need(self, task: Task) -> int:
        """Slots `task` takes: its `cpu`, at most all of them (it may still run alone)."""
        return min(task.cpu, self.slots)

    def room_for(self, task: Task) -> bool:
        """Enough free slots for `task` (the best ready task keeps them rather than starve)."""
        return self.need(task) <= self.slots - self.used

    def full(self) -> bool:
        return self.used >= self.slots

    def try_admit(self, task: Task) -> Wait | None:
        """None when `task` may start now (its locks are then held: `take` the rest), or why not.
        Never blocks."""
        for name, n in task.resources.items():
            held, capacity = self._held.get(name, 0), self.capacities.get(name, 1)
            if held and held + n > capacity:
                return Wait(WaitKind.RESOURCE, f"resource {name} in use ({held} of {capacity})")
        if not self.throttle.allows_start(self.used):
            return Wait(WaitKind.THROTTLE, self.throttle.reason())
        return self.try_lock(task)

    def try_lock(self, task: Task) -> Wait | None:
        why = self.gate.try_acquire(task) if self.gate else None
        return None if why is None else Wait(WaitKind.LOCK, why)

    def take(self, task: Task) -> None:
        """`task` starts: it holds its slots and resources until `release`."""
        self.used += self.need(task)
        for name, n in task.resources.items():
            self._held[name] = self._held.get(name, 0) + n

    def release(self, task: Task) -> None:
        """`task` ended: its slots, resources and locks are free again."""
        self.used -= self.need(task)
        self.throttle.task_ended()
        for name, n in task.resources.items():
            self._held[name] -= n
        if self.gate:
            self.gate.release(task)

    def give_up(self, task: Task) -> None:
        """`task` no longer waits (the run stops): its place in the locks' line goes."""
        if self.gate:
            self.gate.cancel(task)

    def bell(self) -> int | None:
        """A descriptor readable when a lock a waiting task wants may have come free."""
        return self.gate.fileno() if self.gate else None
