"""TaskGraph's predecessors and successors, however the edges come (repeated, in any order, some
added later as ordering edges), are each task's neighbours in declared order, once each; and
its layers and critical paths are the longest chains, computed here the slow way."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from novaproc.planning.graph import CycleFound, TaskGraph


@st.composite
def graphs(draw):
    n = draw(st.integers(1, 12))
    ids = [f"t{i}" for i in draw(st.permutations(range(n)))]  # declared order != numbering
    pairs = st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda p: p[0] < p[1])
    edges = [(f"t{a}", f"t{b}") for a, b in draw(st.lists(pairs, max_size=30))]  # acyclic by numbering
    later = [(f"t{a}", f"t{b}") for a, b in draw(st.lists(pairs, max_size=10))]
    return ids, draw(st.permutations(edges)), later


def neighbours(ids: list[str], edges: list[tuple[str, str]]) -> tuple[dict, dict]:
    preds = {t: tuple(p for p in ids if (p, t) in edges) for t in ids}
    succs = {t: tuple(s for s in ids if (t, s) in edges) for t in ids}
    return preds, succs


@settings(max_examples=300, deadline=None)
@given(graphs())
def test_neighbours_are_in_declared_order_once_each(case):
    ids, edges, later = case
    graph = TaskGraph(ids, edges)
    assert (graph.preds, graph.succs) == neighbours(ids, set(edges))
    forward = [(a, b) for a, b in later if graph.order.index(a) < graph.order.index(b)]
    order = graph.order
    graph.add_ordering(forward)
    assert graph.order == order
    assert (graph.preds, graph.succs) == neighbours(ids, set(edges) | set(forward))
    depth: dict[str, int] = {}
    for tid in graph.order:
        depth[tid] = max((depth[p] + 1 for p in graph.preds[tid]), default=0)
    assert graph.layers() == [[t for t in ids if depth[t] == d] for d in range(max(depth.values()) + 1)]
    durations = {t: float(i % 3) for i, t in enumerate(ids)}

    def remaining(tid: str) -> float:
        return durations[tid] + max((remaining(s) for s in graph.succs[tid]), default=0.0)

    assert graph.critical_paths(durations) == {t: remaining(t) for t in ids}


def test_an_unknown_task_on_either_side_is_a_key_error():
    with pytest.raises(KeyError):
        TaskGraph(["a", "b"], [("a", "zz")])
    with pytest.raises(KeyError):
        TaskGraph(["a", "b"], [("zz", "a")])
    with pytest.raises(KeyError):
        TaskGraph(["a", "b", "c"], [("zz", "a"), ("b", "a")])


def test_a_cycle_is_found_also_through_a_self_edge():
    with pytest.raises(CycleFound):
        TaskGraph(["a"], [("a", "a")])
    with pytest.raises(CycleFound) as caught:
        TaskGraph(["a", "b", "c"], [("a", "b"), ("b", "c"), ("c", "a")])
    assert caught.value.cycle[0] == caught.value.cycle[-1]


@settings(max_examples=300, deadline=None)
@given(graphs(), st.data())
def test_a_graph_of_each_task_s_own_dependencies_is_the_graph_of_their_edges(case, data):
    ids, edges, _ = case
    waits_for = {t: [a for a, b in edges if b == t] for t in ids}  # in any order, repeats kept
    waits_for = {t: tuple(data.draw(st.permutations(deps))) for t, deps in waits_for.items()}
    graph, declared = TaskGraph(ids, edges), TaskGraph.of_dependencies(waits_for)
    assert (declared.ids, declared.preds, declared.succs, declared.order) == (
        graph.ids, graph.preds, graph.succs, graph.order)


def test_of_dependencies_refuses_an_unknown_task_and_finds_a_cycle():
    with pytest.raises(KeyError):
        TaskGraph.of_dependencies({"a": (), "b": ("zz",)})
    with pytest.raises(KeyError):
        TaskGraph.of_dependencies({"a": (), "b": ("a", "zz")})
    with pytest.raises(CycleFound):
        TaskGraph.of_dependencies({"a": ("b",), "b": ("a",)})
