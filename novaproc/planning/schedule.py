"""The run-time side of a plan: each task's state, and which tasks are ready, best first.
Pure: the supervisor's loop tells it what started and what ended.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping

from novaproc.messages import TaskState
from novaproc.planning.graph import TaskGraph

_CHUNK = 64


class Schedule:
    """Run-time task states on the plan's graph: which tasks are ready, best first.

    A task is ready when every predecessor has ended; a failed (or skipped) predecessor over
    a hard edge skips it instead. Best first = longest remaining critical path, then declared
    order.
    """

    def __init__(self, graph: TaskGraph, hard_edges: frozenset[tuple[str, str]],
                 priority: Mapping[str, float]) -> None:
        self.graph, self.hard_edges = graph, hard_edges
        self.state = dict.fromkeys(graph.ids, TaskState.QUEUED)
        self._missing = {tid: len(p) for tid, p in graph.preds.items()}
        # the ready line is kept worst first, so the best is taken from its end: a start then
        # moves nothing, where taking from the front moved the whole line (100,000 tasks)
        self._key = {tid: (priority.get(tid, 0.0), -graph.index[tid]) for tid in graph.ids}
        self._ready: list[tuple[tuple[float, int], str]] = sorted(
            (self._key[t], t) for t, n in self._missing.items() if n == 0)
        self._open = len(graph.ids)

    def ready(self) -> list[str]:
        """Ready tasks, best first."""
        return list(self.iter_ready())

    def iter_ready(self) -> Iterator[str]:
        """Ready tasks, best first: safe to start some while iterating, and cheap when the
        caller stops after the first few (a copy of the whole line at every look made a
        plan of 10,000 independent tasks quadratic)."""
        last: tuple[tuple[float, int], str] | None = None
        while True:
            end = len(self._ready) if last is None else bisect.bisect_left(self._ready, last)
            chunk = self._ready[max(0, end - _CHUNK):end]  # a snapshot: starting one changes the line
            if not chunk:
                return
            for _, tid in reversed(chunk):
                yield tid
            last = chunk[0]

    def has_ready(self) -> bool:
        return bool(self._ready)

    def start(self, tid: str) -> None:
        i = bisect.bisect_left(self._ready, (self._key[tid], tid))
        if i == len(self._ready) or self._ready[i][1] != tid:
            raise ValueError(f"task {tid!r} is not ready")
        del self._ready[i]
        self.state[tid] = TaskState.RUNNING

    def finish(self, tid: str, ok: bool, *, state: TaskState | None = None) -> list[str]:
        """Record the end of `tid` (as `state`, by default done or failed); returns the tasks
        this skips (hard dependents, transitively, of a task that did not succeed)."""
        self.state[tid] = state or (TaskState.DONE if ok else TaskState.FAILED)
        self._open -= 1
        skipped = [] if ok else self._skip_dependents(tid)
        self._release(tid)
        return skipped

    def _skip_dependents(self, failed: str) -> list[str]:
        """Mark every task that depends (hard edges, transitively) on `failed` as skipped."""
        skipped: list[str] = []
        stack = [failed]
        while stack:
            current = stack.pop()
            for nxt in sorted(self.graph.succs[current], key=self.graph.index.__getitem__):
                if (current, nxt) in self.hard_edges and self.state[nxt] == TaskState.QUEUED:
                    self.state[nxt] = TaskState.SKIPPED
                    self._open -= 1
                    skipped.append(nxt)
                    stack.append(nxt)
        return skipped

    def _release(self, tid: str) -> None:
        """`tid` has ended: its successors have one predecessor fewer to wait for. A skipped
        task passes the release on only once its own predecessors have ended, so an order
        (two tasks writing one file) holds even through a skipped task between them."""
        stack = [tid]
        while stack:
            for nxt in sorted(self.graph.succs[stack.pop()], key=self.graph.index.__getitem__):
                self._missing[nxt] -= 1
                if self._missing[nxt] > 0:
                    continue
                if self.state[nxt] == TaskState.SKIPPED:
                    stack.append(nxt)
                elif self.state[nxt] == TaskState.QUEUED:
                    bisect.insort(self._ready, (self._key[nxt], nxt))

    def assume_done(self, tid: str) -> None:
        """Record `tid` as succeeded without running it: a resumed run keeps its result."""
        if self.state[tid] != TaskState.QUEUED:
            raise ValueError(f"task {tid!r} is already {self.state[tid]}")
        i = bisect.bisect_left(self._ready, (self._key[tid], tid))
        if i < len(self._ready) and self._ready[i][1] == tid:
            del self._ready[i]
        self.state[tid] = TaskState.DONE
        self._open -= 1
        self._release(tid)

    def cancel_rest(self) -> list[str]:
        """Mark every task that has not started as cancelled; returns them."""
        rest = [t for t, s in self.state.items() if s == TaskState.QUEUED]
        for tid in rest:
            self.state[tid] = TaskState.CANCELLED
            self._open -= 1
        self._ready.clear()
        return rest

    @property
    def remaining(self) -> int:
        """Tasks that have not ended (nor been skipped or cancelled)."""
        return self._open

    def finished(self) -> bool:
        return self._open == 0
