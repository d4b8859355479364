"""The text of a very large plan: a bounded number of task lines and of names in a layer's line,
and a pointer to plan --json, which lists everything."""

from __future__ import annotations

from novaproc.cli.text import MAX_IN_LAYER, MAX_TASK_LINES, render_plan
from novaproc.inputs.kinds import Kind
from novaproc.inputs.taskfile import Task
from novaproc.planning.plan import make_plan


def plan_of(tasks: list[Task]):
    return make_plan(tasks, root="/repo", slots=4, isolation="worktree")


def test_task_lines_stop_at_the_limit_and_say_how_many_more():
    n = MAX_TASK_LINES + 7
    text = render_plan(plan_of([Task(id=f"t{i}", cmd="true", kind=Kind.NORMAL, writes=(f"f{i}",))
                                for i in range(n)]))
    assert f"Tasks ({n}):" in text
    assert f"  {MAX_TASK_LINES}. t{MAX_TASK_LINES - 1}" in text
    assert f"t{MAX_TASK_LINES} " not in text
    assert "  ... and 7 more (plan --json lists them all)" in text


def test_a_wide_layer_names_its_first_tasks_and_counts_the_rest():
    first = Task(id="root", cmd="true", kind=Kind.NORMAL, writes=("r",))
    wide = [Task(id=f"w{i}", cmd="true", kind=Kind.NORMAL, depends_on=("root",), writes=(f"f{i}",))
            for i in range(MAX_IN_LAYER + 3)]
    layer = next(line for line in render_plan(plan_of([first, *wide])).splitlines()
                 if line.startswith("  Layer 2:"))
    assert layer.endswith(f"w{MAX_IN_LAYER - 1}, ... and 3 more (depends on layer 1)")


def test_a_small_plan_is_shown_whole():
    text = render_plan(plan_of([Task(id=f"t{i}", cmd="true", kind=Kind.NORMAL, writes=(f"f{i}",))
                                for i in range(5)]))
    assert "more" not in text and "  5. t4" in text
