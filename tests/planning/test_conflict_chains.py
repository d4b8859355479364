"""Conflicts become ordering chains, never every pair: the number of edges grows with the tasks,
and every two conflicting tasks still wait for each other through the chain, also when a task
between them is skipped."""

from __future__ import annotations

from hypothesis import given
from test_plan_properties import EXAMPLES, Case, cases

from novaproc.inputs.kinds import Kind
from novaproc.inputs.taskfile import Task
from novaproc.messages import TaskState
from novaproc.planning.plan import make_plan, simulate

ROOT = "/repo"


def task(tid: str, **fields) -> Task:
    return Task(id=tid, cmd="true", kind=Kind.NORMAL,
                **{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def plan_of(tasks: list[Task], slots: int = 4):
    return make_plan(tasks, root=ROOT, slots=slots, isolation="worktree")


def test_writers_of_one_file_form_one_chain():
    plan = plan_of([task(f"t{i}", writes=["shared.txt"]) for i in range(200)])
    assert [(c.first, c.second) for c in plan.conflicts] == [(f"t{i}", f"t{i + 1}") for i in range(199)]
    assert all(c.paths == ("shared.txt",) and c.why == "write/write" for c in plan.conflicts)
    assert "t0" in plan.graph.ancestors(["t199"])


def test_writers_of_files_and_of_their_folder_make_edges_in_proportion_to_the_tasks():
    # 1,000 writers of 10 files in 10 folders, every 50th writes a whole folder: all pairs would
    # be some 55,000 edges, the chains about one per task
    tasks = [task(f"t{i}", writes=[f"d{i % 10}" if i % 50 == 49 else f"d{i % 10}/f{i % 7}.txt"])
             for i in range(1_000)]
    plan = plan_of(tasks)
    assert len(plan.conflicts) < 2 * len(tasks)
    edges = sum(len(p) for p in plan.graph.preds.values())
    assert edges == len(plan.conflicts)


def test_a_folder_writer_waits_for_the_last_writer_of_each_file_beneath_it():
    tasks = [task("a1", writes=["src/a.py"]), task("b", writes=["src/b.py"]), task("a2", writes=["src/a.py"]),
             task("all", writes=["src"]), task("after", writes=["src/a.py"])]
    pairs = {(c.first, c.second): c.paths for c in plan_of(tasks).conflicts}
    assert pairs == {("a1", "a2"): ("src/a.py",), ("b", "all"): ("src/b.py",), ("a2", "all"): ("src/a.py",),
                     ("all", "after"): ("src/a.py",)}


def test_readers_wait_for_the_writer_before_them_and_the_next_writer_waits_for_them():
    tasks = [task("w1", writes=["data/x"]), task("r1", reads=["data"]), task("r2", reads=["data/x"]),
             task("w2", writes=["data/x"])]
    pairs = {(c.first, c.second): c.why for c in plan_of(tasks).conflicts}
    assert pairs == {("w1", "r1"): "write/read", ("w1", "r2"): "write/read", ("w1", "w2"): "write/write",
                     ("r1", "w2"): "write/read", ("r2", "w2"): "write/read"}


def test_the_chain_holds_through_a_skipped_task():
    # b is skipped when its dependency fails; c writes what a writes and must still wait for a
    tasks = [task("dep"), task("a", writes=["x"]), task("b", writes=["x"], depends_on=["dep"]),
             task("c", writes=["x"])]
    plan = plan_of(tasks)
    assert ("a", "c") not in {(c.first, c.second) for c in plan.conflicts}
    schedule = plan.schedule()
    schedule.start("dep")
    schedule.start("a")
    assert schedule.finish("dep", ok=False) == ["b"]
    assert schedule.state["b"] == TaskState.SKIPPED
    assert not schedule.has_ready()  # c waits for a, through the skipped b
    schedule.finish("a", ok=True)
    assert schedule.ready() == ["c"]


@EXAMPLES
@given(cases())
def test_the_one_slot_simulation_matches_the_general_one(case: Case):
    # a resource with room for every task sends the same tasks through the general path
    unit = [Task(**{**t.__dict__, "cpu": 1}) for t in case.tasks]
    general = [Task(**{**t.__dict__, "resources": {"room": 1}}) for t in unit]
    plan = make_plan(unit, root=ROOT, slots=case.slots, isolation="worktree", history=case.history)
    args = (plan.durations, plan.priority, case.slots)
    fast = simulate(plan.graph, unit, *args, {})
    slow = simulate(plan.graph, general, *args, {"room": len(unit)})
    assert fast == slow
