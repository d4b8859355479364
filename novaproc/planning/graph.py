"""The task DAG: nodes in declared order, edges from a task to those that must wait for it.

Pure: built from ids and edges, no files or processes. graphlib finds cycles; the layering
and critical paths are computed here because graphlib does not offer them.
"""

from __future__ import annotations

import graphlib
import heapq
from collections.abc import Iterable, Mapping, Sequence


class CycleFound(ValueError):
    """The edges form a cycle; `cycle` lists it with the first id repeated at the end."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__(" -> ".join(cycle))


class TaskGraph:
    """Ids in declared order plus the predecessors and successors of each (tuples in declared
    order, no repeats); checked acyclic on creation."""

    def __init__(self, ids: Iterable[str], edges: Iterable[tuple[str, str]]) -> None:
        self._start(ids)
        self._add(edges)
        self.order = self._stable_topological_order()

    @classmethod
    def of_dependencies(cls, waits_for: Mapping[str, Sequence[str]]) -> TaskGraph:
        """TaskGraph(the keys, an edge from each dependency to its task), from each task's own
        list: no edges to group, and a task's one dependency keeps its tuple."""
        graph = cls.__new__(cls)
        graph._start(waits_for)
        graph._link(waits_for)
        graph.order = graph._stable_topological_order()
        return graph

    def _start(self, ids: Iterable[str]) -> None:
        self.ids: tuple[str, ...] = tuple(ids)
        self.index = {tid: i for i, tid in enumerate(self.ids)}
        # tuples, the empty one shared: a set per task was 48 MB of 100,000 tasks' plan
        self.preds: dict[str, tuple[str, ...]] = dict.fromkeys(self.ids, ())
        self.succs: dict[str, tuple[str, ...]] = dict.fromkeys(self.ids, ())
        self._position: dict[str, int] | None = None
        self._layers: list[list[str]] | None = None

    def _link(self, waits_for: Mapping[str, Sequence[str]]) -> None:
        """Each task's predecessors from its list, and the successors of each as the tasks come,
        in declared order, so in that order too. An unknown id is a KeyError."""
        preds, key = self.preds, self.index.__getitem__
        gained: dict[str, list[str]] = {}
        for after in self.ids:
            before = waits_for[after]
            if not before:
                continue
            before = tuple(before) if len(before) == 1 else tuple(sorted(set(before), key=key))
            preds[after] = before
            for tid in before:
                got = gained.get(tid)
                if got is None:
                    key(tid)  # a task of the graph
                    gained[tid] = [after]
                else:
                    got.append(after)
        for tid, afters in gained.items():
            self.succs[tid] = tuple(afters)

    def add_ordering(self, edges: Iterable[tuple[str, str]]) -> None:
        """Add edges that each go forward in `order`. The order stays the stable one without
        sorting again: each step of Kahn's algorithm picks among fewer ready tasks, and the
        earliest-declared of the old ones is still ready (its new predecessors came before it)."""
        position = self._position
        if position is None:  # the order stays: its positions are found once
            position = self._position = {tid: i for i, tid in enumerate(self.order)}
        edges = list(edges)
        for before, after in edges:
            if position[before] >= position[after]:
                raise ValueError(f"edge {before} -> {after} goes against the order")
        self._add(edges)
        self._layers = None

    def _add(self, edges: Iterable[tuple[str, str]]) -> None:
        """Group the edges by the task that waits, then give each task it touches its new tuples
        once. An unknown id is a KeyError.

        The waiting tasks are taken in declared order, so each task's new successors come in
        that order: only a task that had successors already needs them sorted (edges given in
        a set's order made a sort, and a walk all over memory, per task of 100,000)."""
        preds, succs, key = self.preds, self.succs, self.index.__getitem__
        grouped: dict[str, list[str]] = {}
        for before, after in edges:
            linked = grouped.get(after)
            if linked is None:
                grouped[after] = [before]
            else:
                linked.append(before)
        gained: dict[str, list[str]] = {}  # a task -> its new successors, in declared order
        for after in sorted(grouped, key=key):
            old, new = preds[after], grouped[after]
            if len(new) == 1 and not old:  # most tasks: one predecessor, the first
                preds[after] = tuple(new)
            else:
                new = set(new).difference(old)  # repeats, and edges it had, once
                preds[after] = tuple(sorted(new.union(old), key=key))
            for before in new:
                got = gained.get(before)
                if got is None:
                    gained[before] = [after]
                else:
                    got.append(after)
        for before, afters in gained.items():
            old = succs[before]
            succs[before] = tuple(afters) if not old else tuple(sorted({*old, *afters}, key=key))

    def _stable_topological_order(self) -> tuple[str, ...]:
        """Kahn's algorithm, always taking the earliest-declared ready task."""
        missing = {tid: len(p) for tid, p in self.preds.items()}
        heap = [self.index[t] for t, n in missing.items() if n == 0]
        heapq.heapify(heap)
        order: list[str] = []
        while heap:
            tid = self.ids[heapq.heappop(heap)]
            order.append(tid)
            for nxt in self.succs[tid]:
                missing[nxt] -= 1
                if missing[nxt] == 0:
                    heapq.heappush(heap, self.index[nxt])
        if len(order) != len(self.ids):
            raise CycleFound(self._find_cycle())
        return tuple(order)

    def _find_cycle(self) -> list[str]:
        sorter = graphlib.TopologicalSorter({t: sorted(p) for t, p in self.preds.items()})
        try:
            sorter.prepare()
        except graphlib.CycleError as e:
            # graphlib lists the cycle against the edge direction we give it; reverse it so it
            # reads "a depends on b depends on a" as the user wrote it
            return list(reversed(e.args[1]))
        raise AssertionError("Kahn's algorithm saw a cycle that graphlib did not")

    def layers(self) -> list[list[str]]:
        """Tasks grouped by the length of the longest chain of predecessors before them."""
        if self._layers is None:  # the strategy, the text and the JSON of a plan each ask
            self._layers = self._grouped()
        return [list(layer) for layer in self._layers]

    def _grouped(self) -> list[list[str]]:
        depth: dict[str, int] = {}
        preds = self.preds
        for tid in self.order:
            before = preds[tid]  # no generator for the many with one predecessor or none
            depth[tid] = (0 if not before else 1 + depth[before[0]] if len(before) == 1
                          else 1 + max([depth[p] for p in before]))
        grouped: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for tid in self.ids:
            grouped[depth[tid]].append(tid)
        return grouped

    def critical_paths(self, durations: Mapping[str, float]) -> dict[str, float]:
        """For each task, its duration plus the longest chain of work that waits on it."""
        remaining: dict[str, float] = {}
        succs = self.succs
        for tid in reversed(self.order):
            after = succs[tid]  # no generator for the many with one successor or none
            remaining[tid] = durations[tid] + (0.0 if not after else remaining[after[0]] if len(after) == 1
                                               else max([remaining[s] for s in after]))
        return remaining

    def ancestors(self, roots: Iterable[str]) -> set[str]:
        """`roots` and everything they transitively wait for."""
        seen: set[str] = set()
        stack = list(roots)
        while stack:
            tid = stack.pop()
            if tid not in seen:
                seen.add(tid)
                stack.extend(self.preds[tid])
        return seen
