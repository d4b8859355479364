"""The plan: what runs in which order, why, and what may start now. Pure: no processes,
files or git.

`make_plan` turns tasks and settings into a Plan: declared dependencies (hard edges: a
failure skips what waits), ordering edges for conflicting paths and serial kinds (order-only:
the later task waits for the earlier to end, whatever its outcome), the strategy with its
reason and safety level, and a list-scheduling estimate of the speedup. The run-time side of
the same plan is schedule.py's.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from novaproc.inputs.bulk import collector_paused
from novaproc.inputs.kinds import SERIAL_KINDS, Kind
from novaproc.inputs.taskfile import Task
from novaproc.planning.conflicts import Conflict, find_conflicts
from novaproc.planning.graph import TaskGraph
from novaproc.planning.schedule import Schedule

SERIAL_REASONS = {
    Kind.GIT: "Contains git operations",
    Kind.DATABASE: "Database operations detected",
    Kind.DEPLOY: "Deployment operations detected",
}


@dataclass(frozen=True)
class Plan:
    strategy: str  # sequential | simple_parallel | dag
    reason: str
    safety: str
    estimated_speedup: float
    slots: int
    tasks: tuple[Task, ...]
    graph: TaskGraph
    hard_edges: frozenset[tuple[str, str]]
    conflicts: tuple[Conflict, ...]
    durations: Mapping[str, float]
    isolation: str
    warnings: tuple[str, ...] = ()
    priority: Mapping[str, float] = field(default_factory=dict)

    def layers(self) -> list[list[str]]:
        return self.graph.layers()

    def schedule(self) -> Schedule:
        """A fresh run-time schedule of this plan."""
        return Schedule(self.graph, self.hard_edges, self.priority)

    def implicit_after(self, tid: str) -> list[str]:
        """Tasks `tid` waits for only because of conflicts or serial kinds."""
        return sorted((p for p in self.graph.preds[tid] if (p, tid) not in self.hard_edges),
                      key=self.graph.index.__getitem__)

    def to_json(self) -> dict[str, object]:
        return {
            "strategy": self.strategy,
            "reason": self.reason,
            "safety": self.safety,
            "estimated_speedup": round(self.estimated_speedup, 2),
            "slots": self.slots,
            "isolation": self.isolation,
            "layers": self.layers(),
            "conflicts": [{"tasks": [c.first, c.second], "paths": list(c.paths), "why": c.why}
                          for c in self.conflicts],
            "warnings": list(self.warnings),
            "tasks": [self._task_json(t) for t in self.tasks],
        }

    def _task_json(self, t: Task) -> dict[str, object]:
        return {
            "id": t.id, "description": t.label, "kind": str(t.kind), "kind_reason": t.kind_reason,
            "depends_on": list(t.depends_on), "after": self.implicit_after(t.id),
            "writes": list(t.writes), "reads": list(t.reads), "cpu": t.cpu,
            "estimated_duration": self.durations[t.id],
            **({"template": t.template, "item": t.item} if t.template else {}),
        }


T = TypeVar("T")
# keeps what `make` derives from the tasks alone under a name, for the next plan of the same tasks
Memo = Callable[[str, Callable[[], T]], T]
Ordering = tuple[TaskGraph, tuple[Conflict, ...]]  # the graph with its ordering edges, the conflicts


def make_plan(
    tasks: Sequence[Task],
    *,
    root: str,
    slots: int,
    isolation: str,
    history: Mapping[str, float] | None = None,
    resources: Mapping[str, int] | None = None,
    memo: Memo[Ordering] | None = None,
) -> Plan:
    """The plan for `tasks` (already selected, in declared order) on `slots` slots. `memo`
    may keep the graph and conflicts, which depend on the tasks and `root` alone."""
    with collector_paused():
        return _make_plan(tasks, root, slots, isolation, history or {}, resources or {}, memo)


def _make_plan(tasks: Sequence[Task], root: str, slots: int, isolation: str, history: Mapping[str, float],
               resources: Mapping[str, int], memo: Memo[Ordering] | None) -> Plan:
    ids = [t.id for t in tasks]
    hard = frozenset((dep, t.id) for t in tasks for dep in t.depends_on)
    ordering = partial(_ordering, tasks, root)
    graph, conflicts = memo("ordering", ordering) if memo is not None else ordering()
    durations = _durations(ids, history)
    priority = graph.critical_paths(durations)
    makespan = simulate(graph, tasks, durations, priority, slots, resources)
    total = sum(durations.values())
    speedup = total / makespan if makespan > 0 else 1.0
    strategy, reason, forced = _strategy(tasks, graph, conflicts, slots)
    warnings = _warnings(tasks, isolation, strategy)
    safety = "SAFE (forced sequential)" if forced else ("WARNING" if warnings else "SAFE")
    return Plan(strategy, reason, safety, speedup, slots, tuple(tasks), graph, hard,
                conflicts, durations, isolation, warnings, priority)


def _ordering(tasks: Sequence[Task], root: str) -> Ordering:
    """The graph of the dependencies and of the conflicts' ordering edges, and the conflicts."""
    graph = _graph(tasks)  # raises CycleFound
    conflicts = find_conflicts(tasks, root, graph.order)
    graph.add_ordering((c.first, c.second) for c in conflicts)
    graph.layers()  # found now, they are kept with it
    return graph, conflicts


def select(tasks: Sequence[Task], only: Iterable[str]) -> list[Task]:
    """The tasks named in `only` and everything they depend on, in declared order."""
    graph = _graph(tasks)
    keep = graph.ancestors(only)
    return [t for t in tasks if t.id in keep]


def _graph(tasks: Sequence[Task]) -> TaskGraph:
    """The graph of the tasks' declared dependencies."""
    waits_for = {t.id: t.depends_on for t in tasks}
    if len(waits_for) < len(tasks):  # an id twice: as TaskGraph takes them
        return TaskGraph([t.id for t in tasks], ((d, t.id) for t in tasks for d in t.depends_on))
    return TaskGraph.of_dependencies(waits_for)


def _durations(ids: Sequence[str], history: Mapping[str, float]) -> dict[str, float]:
    if not history:  # a first plan: every task the default, 1.0, without a look-up each
        return dict.fromkeys(ids, 1.0)
    known = [history[t] for t in ids if t in history]
    default = sum(known) / len(known) if known else 1.0
    return {t: max(float(history.get(t, default)), 0.0) for t in ids}


def simulate(
    graph: TaskGraph,
    tasks: Sequence[Task],
    durations: Mapping[str, float],
    priority: Mapping[str, float],
    slots: int,
    resources: Mapping[str, int],
) -> float:
    """The makespan of list scheduling: whenever slots free up, start the ready task with
    the longest remaining critical path that fits (cpu slots and named resources)."""
    if all(t.cpu == 1 and not t.resources for t in tasks):
        return _simulate_unit(graph, durations, priority, slots)
    by_id = {t.id: t for t in tasks}
    schedule = Schedule(graph, frozenset(), priority)
    free, held = slots, defaultdict(int)
    now, running = 0.0, []  # heap of (end time, index, id)
    while not schedule.finished():
        for tid in schedule.iter_ready():
            task = by_id[tid]
            need = min(task.cpu, slots)
            if need > free or not _resources_fit(task, held, resources):
                continue
            schedule.start(tid)
            free -= need
            for name, n in task.resources.items():
                held[name] += n
            heapq.heappush(running, (now + durations[tid], graph.index[tid], tid))
            if free == 0:
                break
        if not running:
            break  # nothing fits even with all slots free: cannot happen, see _resources_fit
        now, _, tid = heapq.heappop(running)
        free += min(by_id[tid].cpu, slots)
        for name, n in by_id[tid].resources.items():
            held[name] -= n
        schedule.finish(tid, ok=True)
    return now


def _simulate_unit(graph: TaskGraph, durations: Mapping[str, float], priority: Mapping[str, float],
                   slots: int) -> float:
    """`simulate` when every task takes one slot and no resource, as most do: the best ready
    task starts whenever a slot is free. Best is Schedule's order (longest critical path, then
    declared order), kept in a heap instead of its sorted line: the same makespan, in a fifth
    of the time at 100,000 tasks."""
    index, succs = graph.index, graph.succs
    missing = {tid: len(p) for tid, p in graph.preds.items()}
    # the tasks ready at the start, sorted once, and a heap of those that become ready later:
    # the best of the two goes first, as from one heap, without a pop of the heap for each of
    # 100,000 independent tasks
    first = sorted([(-priority[t], index[t], t) for t, n in missing.items() if n == 0], reverse=True)
    ready: list[tuple[float, int, str]] = []
    free, now = slots, 0.0
    running: list[tuple[float, int, str]] = []  # (end time, index, id)
    while first or ready or running:
        while free and (first or ready):
            best = heapq.heappop(ready) if ready and (not first or ready[0] < first[-1]) else first.pop()
            heapq.heappush(running, (now + durations[best[2]], best[1], best[2]))
            free -= 1
        now, _, tid = heapq.heappop(running)
        free += 1
        for nxt in succs[tid]:
            missing[nxt] -= 1
            if missing[nxt] == 0:
                heapq.heappush(ready, (-priority[nxt], index[nxt], nxt))
    return now


def _resources_fit(task: Task, held: Mapping[str, int], capacity: Mapping[str, int]) -> bool:
    # a task asking for more than a resource's whole capacity may still run alone
    return all(held[name] == 0 or held[name] + n <= capacity.get(name, 1)
               for name, n in task.resources.items())


def _strategy(tasks: Sequence[Task], graph: TaskGraph, conflicts: Sequence[Conflict],
              slots: int) -> tuple[str, str, bool]:
    """(strategy, reason, forced sequential by conflicts or kinds)."""
    n = len(tasks)
    chain = all(len(layer) == 1 for layer in graph.layers())
    if n == 1:
        return "sequential", "Single task", False
    if chain and conflicts:
        return "sequential", _conflict_reason(conflicts, n), True
    if chain:
        return "sequential", "Tasks form one dependency chain", False
    if slots == 1:
        return "sequential", "max_parallel is 1: one task at a time", False
    if not any(graph.preds.values()):
        return "simple_parallel", f"{n} independent tasks - safe for parallel execution", False
    has_deps = any(t.depends_on for t in tasks)
    reason = "Tasks have dependencies" if has_deps else "Conflicting tasks run in declared order"
    if conflicts and has_deps:
        reason += f"; {len(conflicts)} conflicting pair(s) run in declared order"
    return "dag", reason, False


def _conflict_reason(conflicts: Sequence[Conflict], n: int) -> str:
    kinds = {c.why for c in conflicts} & {str(k) for k in SERIAL_KINDS}
    if kinds:
        return "; ".join(SERIAL_REASONS[Kind(k)] for k in sorted(kinds))
    shown = sorted({p for c in conflicts for p in c.paths})
    listed = ", ".join(shown[:3]) + (f" and {len(shown) - 3} more" if len(shown) > 3 else "")
    verb = "modify" if all(c.why == "write/write" for c in conflicts) else "touch"
    involved = sorted({t for c in conflicts for t in (c.first, c.second)})
    if len(involved) == n:
        return f"{'Both' if n == 2 else 'All'} tasks {verb} {listed}"
    names = ", ".join(involved[:4]) + (" ..." if len(involved) > 4 else "")
    return f"Tasks {names} {verb} {listed}; the rest form one dependency chain"


def _warnings(tasks: Sequence[Task], isolation: str, strategy: str) -> tuple[str, ...]:
    if strategy == "sequential":
        return ()
    in_place = [t.id for t in tasks if not t.writes and (t.isolation or isolation) == "none"]
    if not in_place:
        return ()
    names = ", ".join(in_place[:5]) + (" ..." if len(in_place) > 5 else "")
    return (f"{len(in_place)} task(s) declare no writes and run in place, so their edits "
            f"cannot be checked for conflicts: {names}",)
