"""The pure plan: strategy, reason, safety, conflicts, ordering edges, speedup, and Schedule."""

from __future__ import annotations

import json

import pytest

from novaproc.inputs import paths
from novaproc.inputs.kinds import Kind
from novaproc.inputs.taskfile import Task
from novaproc.messages import TaskState
from novaproc.planning.graph import CycleFound
from novaproc.planning.plan import Conflict, make_plan, select
from novaproc.planning.schedule import Schedule

ROOT = "/repo"


def task(tid: str, *, kind: Kind = Kind.NORMAL, cmd: str = "true", **fields) -> Task:
    """A Task as the loader would build it: tuples for lists, a resolved kind."""
    for name in ("depends_on", "writes", "reads"):
        if name in fields:
            fields[name] = tuple(fields[name])
    return Task(id=tid, cmd=cmd, kind=kind, **fields)


def plan_of(*tasks: Task, slots: int = 4, isolation: str = "worktree", history=None, resources=None):
    return make_plan(list(tasks), root=ROOT, slots=slots, isolation=isolation, history=history,
                     resources=resources)


def pairs(plan) -> set[tuple[str, str]]:
    return {(c.first, c.second) for c in plan.conflicts}


# ---- strategy, reason, safety -------------------------------------------------------------


def test_independent_tasks_are_simple_parallel():
    plan = plan_of(task("a", writes=["a.py"]), task("b", writes=["b.py"]), task("c", writes=["c.py"]))
    assert plan.strategy == "simple_parallel"
    assert plan.reason == "3 independent tasks - safe for parallel execution"
    assert plan.safety == "SAFE"
    assert plan.conflicts == ()
    assert plan.layers() == [["a", "b", "c"]]
    assert plan.slots == 4
    assert plan.estimated_speedup == pytest.approx(3.0)


def test_speedup_is_capped_by_slots():
    plan = plan_of(task("a", writes=["a"]), task("b", writes=["b"]), task("c", writes=["c"]), slots=2)
    assert plan.estimated_speedup == pytest.approx(1.5)  # 3 units of work in 2 time units


def test_dependencies_make_a_dag_with_layers():
    plan = plan_of(task("a", writes=["a"]), task("b", depends_on=["a"], writes=["b"]),
                   task("c", depends_on=["a"], writes=["c"]), task("d", depends_on=["b", "c"], writes=["d"]))
    assert plan.strategy == "dag"
    assert plan.layers() == [["a"], ["b", "c"], ["d"]]
    assert plan.conflicts == ()
    assert plan.estimated_speedup == pytest.approx(4 / 3)
    assert plan.safety == "SAFE"


def test_one_task_and_one_chain_are_sequential():
    single = plan_of(task("a", writes=["a"]))
    assert single.strategy == "sequential"
    assert single.estimated_speedup == pytest.approx(1.0)
    chain = plan_of(task("a", writes=["a"]), task("b", depends_on=["a"], writes=["b"]))
    assert chain.strategy == "sequential"
    assert chain.safety == "SAFE"
    assert chain.layers() == [["a"], ["b"]]


def test_one_slot_is_sequential():
    plan = plan_of(task("a", writes=["a"]), task("b", writes=["b"]), slots=1)
    assert plan.strategy == "sequential"
    assert plan.estimated_speedup == pytest.approx(1.0)


def test_two_writers_of_one_file_are_sequential_and_the_reason_names_it():
    plan = plan_of(task("fix_auth", writes=["auth.py"]), task("refactor", writes=["auth.py"]))
    assert plan.strategy == "sequential"
    assert plan.reason == "Both tasks modify auth.py"
    assert plan.safety == "SAFE (forced sequential)"
    assert plan.conflicts == (Conflict("fix_auth", "refactor", ("auth.py",), "write/write"),)
    assert plan.layers() == [["fix_auth"], ["refactor"]]
    assert plan.implicit_after("refactor") == ["fix_auth"]
    assert plan.implicit_after("fix_auth") == []
    assert plan.estimated_speedup == pytest.approx(1.0)


def test_sequential_reason_does_not_claim_every_task_touches_the_path():
    # a -> b is declared, b and c both write x.py: one chain, but `a` modifies nothing in common
    plan = plan_of(task("a", writes=["gen"]), task("b", depends_on=["a"], writes=["x.py"]),
                   task("c", writes=["x.py"]))
    assert plan.strategy == "sequential"
    assert "x.py" in plan.reason
    assert not plan.reason.startswith("All tasks")


def test_declared_order_decides_which_conflicting_task_goes_first():
    plan = plan_of(task("second_declared_first", writes=["f"]), task("first", writes=["f"]))
    assert pairs(plan) == {("second_declared_first", "first")}


def test_folder_overlaps_the_files_beneath_it():
    plan = plan_of(task("gen", writes=["src"]), task("fix", writes=["src/auth/login.py"]),
                   task("docs", writes=["docs"]))
    assert plan.conflicts == (Conflict("gen", "fix", ("src/auth/login.py",), "write/write"),)
    assert plan.layers() == [["gen", "docs"], ["fix"]]


@pytest.mark.parametrize(("one", "other"), [
    ("src/a.py", "src/b.py"),  # siblings
    ("src", "srcx/a.py"),  # a shared name prefix is not a shared folder
    ("src/a", "src/ab"),
    ("a/b", "b/a"),
])
def test_paths_that_do_not_overlap(one, other):
    plan = plan_of(task("x", writes=[one]), task("y", writes=[other]))
    assert plan.conflicts == ()
    assert plan.strategy == "simple_parallel"


def test_a_glob_counts_as_its_fixed_prefix():
    assert paths.normalize("src/*.py", ROOT) == "src"
    assert paths.normalize("src/**/test_*.py", ROOT) == "src"
    assert paths.normalize("lib/mod?.py", ROOT) == "lib"
    assert paths.normalize("**/*.md", ROOT) == "."
    glob = task("g", writes=[paths.normalize("src/*.py", ROOT)])
    plan = plan_of(glob, task("deep", writes=["src/sub/data.txt"]), task("lib", writes=["lib/x.py"]))
    assert pairs(plan) == {("g", "deep")}


def test_a_glob_without_a_fixed_prefix_overlaps_the_whole_repository_but_not_outside_it():
    everything = task("all", writes=[paths.normalize("*.py", ROOT)])
    plan = plan_of(everything, task("one", reads=["deep/down/x"]), task("shared", writes=["/var/db.sqlite"]))
    assert pairs(plan) == {("all", "one")}


def test_writer_and_reader_conflict_but_two_readers_do_not():
    plan = plan_of(task("w", writes=["data/db.json"]), task("r1", reads=["data"]), task("r2", reads=["data"]))
    assert pairs(plan) == {("w", "r1"), ("w", "r2")}
    assert {c.why for c in plan.conflicts} == {"write/read"}
    readers_only = plan_of(task("r1", reads=["data"]), task("r2", reads=["data/db.json"]))
    assert readers_only.conflicts == ()
    assert readers_only.strategy == "simple_parallel"


def test_a_reader_declared_first_runs_before_the_writer():
    plan = plan_of(task("r", reads=["cfg.toml"]), task("w", writes=["cfg.toml"]))
    assert plan.conflicts == (Conflict("r", "w", ("cfg.toml",), "write/read"),)


def test_absolute_shared_paths_conflict():
    plan = plan_of(task("a", writes=["/var/cache/shared.db"]), task("b", reads=["/var/cache"]),
                   task("c", writes=["var/cache/shared.db"]))  # relative: inside the repository
    assert pairs(plan) == {("a", "b")}


def test_an_absolute_spelling_inside_the_root_is_the_same_path():
    plan = plan_of(task("a", writes=["/repo/src/x.py"]), task("b", writes=["src"]))
    assert pairs(plan) == {("a", "b")}


@pytest.mark.parametrize(("kind", "cmds", "reason"), [
    (Kind.GIT, ("git commit -am x", "git push"), "Contains git operations"),
    (Kind.DATABASE, ("alembic upgrade head", "python manage.py migrate"), "Database operations detected"),
])
def test_serial_kinds_are_sequential_with_their_reason(kind, cmds, reason):
    plan = plan_of(*(task(f"t{i}", kind=kind, cmd=c, writes=[f"f{i}"]) for i, c in enumerate(cmds)))
    assert plan.strategy == "sequential"
    assert plan.reason == reason
    assert plan.safety == "SAFE (forced sequential)"
    assert plan.conflicts == (Conflict("t0", "t1", (), str(kind)),)


def test_serial_kinds_are_chained_in_declared_order_apart_from_other_tasks():
    plan = plan_of(task("push", kind=Kind.GIT), task("d1", kind=Kind.DEPLOY), task("n", writes=["n"]),
                   task("commit", kind=Kind.GIT), task("d2", kind=Kind.DEPLOY), task("d3", kind=Kind.DEPLOY),
                   task("tag", kind=Kind.GIT))
    assert pairs(plan) == {("push", "commit"), ("commit", "tag"), ("d1", "d2"), ("d2", "d3")}
    layer = {tid: i for i, layer in enumerate(plan.layers()) for tid in layer}
    assert layer["push"] < layer["commit"] < layer["tag"]
    assert layer["d1"] < layer["d2"] < layer["d3"]
    assert layer["n"] == 0
    assert plan.implicit_after("tag") == ["commit"]


def test_implicit_edges_follow_declared_dependencies_instead_of_fighting_them():
    # a is declared first but depends on b; both write x: b must go first, no cycle
    plan = plan_of(task("a", depends_on=["b"], writes=["x"]), task("b", writes=["x"]))
    assert plan.conflicts == (Conflict("b", "a", ("x",), "write/write"),)
    assert plan.layers() == [["b"], ["a"]]
    assert plan.implicit_after("a") == []  # the edge is a declared one


def test_implicit_edges_through_a_bent_order_stay_acyclic():
    plan = plan_of(task("a", depends_on=["c"], writes=["x"], kind=Kind.GIT), task("b", writes=["x"]),
                   task("c", writes=["x"], kind=Kind.GIT))
    assert pairs(plan) == {("b", "c"), ("c", "a")}  # b -> a goes through c: a chain, not every pair
    assert "b" in plan.graph.ancestors(["a"])
    assert plan.layers() == [["b"], ["c"], ["a"]]


def test_serial_kind_chain_follows_declared_dependencies():
    plan = plan_of(task("g1", kind=Kind.GIT, depends_on=["g2"]), task("g2", kind=Kind.GIT))
    assert pairs(plan) == {("g2", "g1")}


def test_a_declared_cycle_is_reported_with_its_path():
    with pytest.raises(CycleFound) as info:
        plan_of(task("a", depends_on=["b"]), task("b", depends_on=["a"]))
    assert info.value.cycle in (["a", "b", "a"], ["b", "a", "b"])
    with pytest.raises(CycleFound) as info:
        plan_of(task("a", depends_on=["a"]))
    assert info.value.cycle == ["a", "a"]
    assert str(info.value) == "a -> a"


def test_tasks_without_writes_running_in_place_give_a_warning():
    in_place = plan_of(task("a"), task("b", writes=["b"]), isolation="none")
    assert in_place.safety != "SAFE"
    assert "warn" in in_place.safety.lower()
    assert any("a" in w for w in in_place.warnings)
    isolated = plan_of(task("a"), task("b", writes=["b"]), isolation="worktree")
    assert isolated.safety == "SAFE"
    assert isolated.warnings == ()
    per_task = plan_of(task("a", isolation="none"), task("b", writes=["b"]), isolation="worktree")
    assert "warn" in per_task.safety.lower()


# ---- estimated speedup --------------------------------------------------------------------


def test_speedup_uses_the_history_of_durations():
    plan = plan_of(task("a", writes=["a"]), task("b", writes=["b"]), slots=2, history={"a": 10.0, "b": 1.0})
    assert plan.estimated_speedup == pytest.approx(11 / 10)
    assert plan.durations == {"a": 10.0, "b": 1.0}
    equal = plan_of(task("a", writes=["a"]), task("b", writes=["b"]), slots=2)
    assert equal.estimated_speedup == pytest.approx(2.0)


def test_list_scheduling_starts_the_longest_critical_path_first():
    # three short independent tasks declared before a chain of four: on two slots the chain must
    # start at once (makespan 4), or the run takes 5
    chain = [task(f"p{i}", depends_on=[f"p{i - 1}"] if i else [], writes=[f"p{i}"]) for i in range(4)]
    plan = plan_of(task("q1", writes=["q1"]), task("q2", writes=["q2"]), task("q3", writes=["q3"]), *chain,
                   slots=2)
    assert plan.estimated_speedup == pytest.approx(7 / 4)


def test_cpu_weights_slots():
    two_wide = [task("a", writes=["a"], cpu=2), task("b", writes=["b"], cpu=2)]
    assert plan_of(*two_wide, slots=4).estimated_speedup == pytest.approx(2.0)
    assert plan_of(*two_wide, slots=3).estimated_speedup == pytest.approx(1.0)
    # wider than the machine: still runs, alone
    huge = plan_of(task("a", writes=["a"], cpu=8), task("b", writes=["b"], cpu=8), slots=4)
    assert huge.estimated_speedup == pytest.approx(1.0)


def test_named_resources_limit_the_estimate():
    both = [task(tid, writes=[tid], resources={"docker": 1}) for tid in ("a", "b")]
    assert plan_of(*both).estimated_speedup == pytest.approx(1.0)  # unnamed capacity is 1
    assert plan_of(*both, resources={"docker": 2}).estimated_speedup == pytest.approx(2.0)
    greedy = plan_of(task("a", writes=["a"], resources={"gpu": 3}), task("b", writes=["b"]),
                     resources={"gpu": 2})
    assert greedy.estimated_speedup == pytest.approx(2.0)


# ---- select (--only) ------------------------------------------------------------------------


def test_select_keeps_the_named_tasks_and_what_they_need_in_declared_order():
    tasks = [task("a"), task("b", depends_on=["a"]), task("c", depends_on=["b"]), task("d"),
             task("e", depends_on=["d"])]
    assert [t.id for t in select(tasks, ["c"])] == ["a", "b", "c"]
    assert [t.id for t in select(tasks, ["e", "b"])] == ["a", "b", "d", "e"]
    assert [t.id for t in select(tasks, ["d"])] == ["d"]


# ---- JSON ----------------------------------------------------------------------------------


def test_to_json_has_the_documented_keys():
    plan = plan_of(task("gen", writes=["src"]), task("fix", writes=["src/auth.py"]),
                   task("test", depends_on=["gen"], reads=["tests"]),
                   task("push", kind=Kind.GIT, cmd="git push"))
    data = json.loads(json.dumps(plan.to_json()))
    assert {"strategy", "reason", "safety", "estimated_speedup", "slots", "layers", "conflicts",
            "tasks"} <= set(data)
    assert data["layers"] == [["gen", "push"], ["fix", "test"]]
    assert data["conflicts"] == [{"tasks": ["gen", "fix"], "paths": ["src/auth.py"], "why": "write/write"}]
    by_id = {t["id"]: t for t in data["tasks"]}
    assert list(by_id) == ["gen", "fix", "test", "push"]
    assert by_id["fix"]["after"] == ["gen"]
    assert by_id["test"]["after"] == []
    assert by_id["test"]["depends_on"] == ["gen"]
    assert by_id["push"]["kind"] == "git"


# ---- Schedule ------------------------------------------------------------------------------


def schedule_of(*tasks: Task, history=None) -> Schedule:
    return plan_of(*tasks, history=history).schedule()


def test_ready_order_is_critical_path_then_declared_order():
    s = schedule_of(task("q1", writes=["q1"]), task("q2", writes=["q2"]), task("p1", writes=["p1"]),
                    task("p2", depends_on=["p1"], writes=["p2"]))
    assert list(s.ready()) == ["p1", "q1", "q2"]
    s.start("q2")
    assert list(s.ready()) == ["p1", "q1"]


def test_ready_order_uses_durations_from_history():
    s = schedule_of(task("a", writes=["a"]), task("b", writes=["b"]), task("c", writes=["c"]),
                    history={"a": 1.0, "b": 5.0, "c": 3.0})
    assert list(s.ready()) == ["b", "c", "a"]


def test_a_task_becomes_ready_when_its_predecessors_end():
    s = schedule_of(task("a", writes=["x"]), task("b", depends_on=["a"]), task("c", writes=["x"]))
    assert list(s.ready()) == ["a"]
    s.start("a")
    assert list(s.ready()) == []
    assert s.state["a"] == TaskState.RUNNING
    assert s.finish("a", ok=True) == []
    assert sorted(s.ready()) == ["b", "c"]
    assert s.state["a"] == TaskState.DONE


def test_starting_a_task_that_is_not_ready_is_refused():
    s = schedule_of(task("a"), task("b", depends_on=["a"]))
    with pytest.raises(ValueError):
        s.start("b")
    s.start("a")
    with pytest.raises(ValueError):
        s.start("a")


def test_a_failure_skips_hard_dependents_transitively_but_not_order_only_successors():
    s = schedule_of(task("a", writes=["x"]), task("b", depends_on=["a"]), task("c", depends_on=["b"]),
                    task("d", writes=["x"]), task("e", depends_on=["d"]))
    s.start("a")
    assert sorted(s.finish("a", ok=False)) == ["b", "c"]
    assert s.state["a"] == TaskState.FAILED
    assert s.state["b"] == s.state["c"] == TaskState.SKIPPED
    assert list(s.ready()) == ["d"]  # d only had to wait for a to end
    s.start("d")
    s.finish("d", ok=True)
    assert list(s.ready()) == ["e"]
    s.start("e")
    s.finish("e", ok=True)
    assert s.finished()


def test_a_failure_skips_a_dependent_still_waiting_for_another_task():
    s = schedule_of(task("a", writes=["a"]), task("b", writes=["b"]), task("c", depends_on=["a", "b"]))
    s.start("a")
    s.start("b")
    assert s.finish("a", ok=False) == ["c"]
    assert s.finish("b", ok=True) == []
    assert list(s.ready()) == []
    assert s.state["c"] == TaskState.SKIPPED
    assert s.finished()


def test_a_task_skipped_over_a_hard_edge_still_releases_its_order_only_successors():
    s = schedule_of(task("a", writes=["a"]), task("b", depends_on=["a"], writes=["x"]),
                    task("c", writes=["x"]))
    s.start("a")
    assert s.finish("a", ok=False) == ["b"]
    assert list(s.ready()) == ["c"]


def test_cancel_rest_cancels_what_has_not_started():
    s = schedule_of(task("a", writes=["a"]), task("b", writes=["b"]), task("c", depends_on=["a"]))
    s.start("a")
    assert sorted(s.cancel_rest()) == ["b", "c"]
    assert list(s.ready()) == []
    assert s.state["b"] == s.state["c"] == TaskState.CANCELLED
    assert not s.finished()  # a is still running
    s.finish("a", ok=True)
    assert s.finished()
    assert s.state["c"] == TaskState.CANCELLED
    assert list(s.ready()) == []
