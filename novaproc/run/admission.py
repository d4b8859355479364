"""Admission: whether a ready task may start now, and why it waits when not. Slots (a task
takes `cpu` of them), named resources, the load throttle and the gate (path locks) decide,
in that order; the supervisor's loop only asks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from novaproc.execution.throttle import Throttle
from novaproc.inputs.taskfile import Task
from novaproc.locking.gate import Gate

THROTTLE_NOTE_AFTER = 1.0  # seconds of held starts worth a note


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
                 gate: Gate | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.slots, self.capacities, self.throttle, self.gate = slots, capacities, throttle, gate
        self.used = 0
        self._held: dict[str, int] = {}
        self.clock = clock
        self.throttled = 0.0  # seconds starts were held back by the load, in all
        self._throttled_since: float | None = None

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
            if self._throttled_since is None:
                self._throttled_since = self.clock()
            return Wait(WaitKind.THROTTLE, self.throttle.reason())
        self._not_throttled()
        return self.try_lock(task)

    def _not_throttled(self) -> None:
        if self._throttled_since is not None:
            self.throttled += self.clock() - self._throttled_since
            self._throttled_since = None

    def notes(self) -> list[str]:
        """What the run's summary should say of admission: how long the load held starts."""
        self._not_throttled()
        if self.throttled < THROTTLE_NOTE_AFTER:
            return []
        return [f"the machine's load held new tasks back for {self.throttled:.0f}s in all (cpu_limit, "
                "memory_limit); tasks that wait on the network rather than on the CPU run better "
                "with cpu_limit = 100"]

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
