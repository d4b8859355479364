"""Properties of the plan on random task graphs, checked against an independent conflict oracle.

Graphs: edges only from an earlier to a later index (so acyclic), then declared in a random
order, so declared dependencies may point forwards or backwards in the file. Paths come from a
small pool that overlaps a lot: folders and the files under them, globs, absolute shared paths.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from novaproc.inputs import paths
from novaproc.inputs.kinds import SERIAL_KINDS, Kind
from novaproc.inputs.taskfile import Task
from novaproc.messages import TaskState
from novaproc.planning.plan import Plan, make_plan

ROOT = "/repo"
POOL = ("a", "a/b", "a/b/c", "a/b/c.py", "a/bc", "d", "d/e.txt", "a/*.py", "a/b/*", "*.md",
        "/shared/cache.db", "/shared", "/repo/d")
KINDS = (Kind.NORMAL, Kind.NORMAL, Kind.NORMAL, Kind.GIT, Kind.DATABASE, Kind.DEPLOY)
EXAMPLES = settings(max_examples=100, deadline=None)


@dataclass(frozen=True)
class Case:
    tasks: list[Task]
    raw: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]  # id -> declared (writes, reads)
    slots: int
    history: dict[str, float]


@st.composite
def cases(draw, max_tasks: int = 9) -> Case:
    n = draw(st.integers(1, max_tasks))
    order = draw(st.permutations(range(n)))
    tasks, raw = [], {}
    for i in order:
        deps = sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))) if i else []
        writes = tuple(draw(st.lists(st.sampled_from(POOL), max_size=2, unique=True)))
        reads = tuple(draw(st.lists(st.sampled_from(POOL), max_size=2, unique=True)))
        tid = f"t{i}"
        raw[tid] = (writes, reads)
        tasks.append(Task(
            id=tid, cmd="true", depends_on=tuple(f"t{d}" for d in deps),
            writes=tuple(paths.normalize(p, ROOT) for p in writes),
            reads=tuple(paths.normalize(p, ROOT) for p in reads),
            kind=draw(st.sampled_from(KINDS)), cpu=draw(st.integers(1, 3)),
        ))
    ids = [t.id for t in tasks]
    history = draw(st.dictionaries(st.sampled_from(ids), st.floats(0, 100), max_size=n))
    return Case(tasks, raw, draw(st.integers(1, 6)), history)


def plan_case(case: Case) -> Plan:
    return make_plan(case.tasks, root=ROOT, slots=case.slots, isolation="worktree", history=case.history)


# ---- the oracle: written from the contract, sharing no code with novaproc.paths ----------


def components(declared: str) -> tuple[str, ...]:
    kept = []
    for part in declared.split("/"):
        if any(c in part for c in "*?["):
            break
        if part and part != ".":
            kept.append(part)
    anchor = [] if declared.startswith("/") else ROOT.strip("/").split("/")
    return (*anchor, *kept)


def overlap(p: str, q: str) -> bool:
    a, b = components(p), components(q)
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def conflicting(case: Case) -> set[frozenset[str]]:
    kind = {t.id: t.kind for t in case.tasks}
    found = set()
    ids = list(case.raw)
    for i, x in enumerate(ids):
        for y in ids[i + 1:]:
            (wx, rx), (wy, ry) = case.raw[x], case.raw[y]
            by_path = any(overlap(p, q) for p in wx for q in (*wy, *ry)) or any(
                overlap(p, q) for p in wy for q in rx)
            if by_path or (kind[x] == kind[y] and kind[x] in SERIAL_KINDS):
                found.add(frozenset((x, y)))
    return found


def layer_index(plan: Plan) -> dict[str, int]:
    return {tid: i for i, layer in enumerate(plan.layers()) for tid in layer}


# ---- properties ----------------------------------------------------------------------------


@EXAMPLES
@given(cases())
def test_layers_partition_the_tasks_and_keep_conflicts_apart(case):
    plan = plan_case(case)
    layer = layer_index(plan)
    assert sorted(layer) == sorted(t.id for t in case.tasks)
    assert sum(len(x) for x in plan.layers()) == len(case.tasks)
    for pair in conflicting(case):
        x, y = sorted(pair)
        assert layer[x] != layer[y], f"{x} and {y} conflict but share layer {layer[x]}"
        # and one of them really waits for the other, so they can never run together
        assert x in plan.graph.ancestors([y]) or y in plan.graph.ancestors([x])


@EXAMPLES
@given(cases())
def test_every_dependency_and_every_conflict_edge_precedes_its_dependent(case):
    plan = plan_case(case)
    layer = layer_index(plan)
    for t in case.tasks:
        for dep in t.depends_on:
            assert layer[dep] < layer[t.id]
    real = conflicting(case)
    for c in plan.conflicts:
        assert layer[c.first] < layer[c.second]
        assert frozenset((c.first, c.second)) in real, f"spurious conflict {c}"


@EXAMPLES
@given(cases())
def test_estimated_speedup_is_between_one_and_the_possible_parallelism(case):
    plan = plan_case(case)
    assert 1 - 1e-9 <= plan.estimated_speedup <= min(case.slots, len(case.tasks)) + 1e-9


@EXAMPLES
@given(cases().map(lambda c: Case(c.tasks, c.raw, 1, c.history)))
def test_one_slot_is_always_sequential(case):
    plan = plan_case(case)
    assert plan.strategy == "sequential"
    assert abs(plan.estimated_speedup - 1.0) < 1e-9


@EXAMPLES
@given(cases(), st.data())
def test_schedule_never_runs_conflicting_tasks_together(case, data):
    plan = plan_case(case)
    real = conflicting(case)
    hard = {(d, t.id) for t in case.tasks for d in t.depends_on}
    preds = {t.id: plan.graph.preds[t.id] for t in case.tasks}
    schedule = plan.schedule()
    running: list[str] = []
    while not schedule.finished():
        ready = list(schedule.ready())
        assert ready or running, "stuck: nothing runs and nothing is ready"
        for tid in data.draw(st.lists(st.sampled_from(ready), unique=True, min_size=0 if running else 1)
                             if ready else st.just([])):
            assert all(schedule.state[p].finished for p in preds[tid])
            assert all(schedule.state[d] == TaskState.DONE for d, t in hard if t == tid)
            for other in running:
                assert frozenset((tid, other)) not in real, f"{tid} started while {other} runs"
            schedule.start(tid)
            running.append(tid)
        done = running.pop(data.draw(st.integers(0, len(running) - 1)))
        ok = data.draw(st.booleans())
        for skipped in schedule.finish(done, ok=ok):
            assert any(schedule.state[d] in (TaskState.FAILED, TaskState.SKIPPED) for d, t in hard
                       if t == skipped)
    for t in case.tasks:
        state = schedule.state[t.id]
        bad_dep = any(schedule.state[d] in (TaskState.FAILED, TaskState.SKIPPED) for d in t.depends_on)
        assert state in ((TaskState.SKIPPED,) if bad_dep else (TaskState.DONE, TaskState.FAILED))
