"""Serial equivalence, end to end (DESIGN.md section 4): random task sets - dependencies;
declared, missing and overlapping writes; appends, replaces, creates, deletes and renames;
identical edits - run in parallel worktrees through the real CLI, and one by one in a plain
copy of the repository in dependency-then-declared order. The merged trees are equal, and
every run ends.

About 30 examples by default; NOVA_SERIAL_EXAMPLES=500 runs more.

Known gap (xfail): a task that writes a file again with the content its base already has (it
depends on the task that wrote it) produces no change, so nothing of it lands; one by one it
would have overwritten what a task landed between them did. Seeing such a rewrite needs the
task's written files, not only its changed ones (git's own diffs compare content).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from support.repo import git, make_repo
from support.sandbox import Sandbox
from support.tasks import tasks_toml, write_tasks

START = {"a.txt": "a\n", "b.txt": "b\n", "d/e.txt": "e\n"}
FILES = ("a.txt", "b.txt", "d/e.txt", "new.txt")
TAGS = ("x", "y")  # few, so that two tasks often make the very same edit
EXAMPLES = int(os.environ.get("NOVA_SERIAL_EXAMPLES", "30"))


@dataclass(frozen=True)
class Op:
    kind: str  # append, replace, create, delete, rename
    path: str
    tag: str

    def shell(self) -> str:
        p = self.path
        return {
            "append": f"mkdir -p $(dirname {p}) && echo {self.tag} >> {p}",
            "replace": f"mkdir -p $(dirname {p}) && echo {self.tag} only > {p}",
            "create": f"mkdir -p $(dirname {p}) && echo {self.tag} new > {p}.{self.tag}",
            "delete": f"rm -f {p}",
            "rename": f"if [ -e {p} ]; then mv {p} {p}.moved; fi",
        }[self.kind]

    def touches(self) -> set[str]:
        return {self.path, f"{self.path}.{self.tag}" if self.kind == "create" else f"{self.path}.moved"}


@dataclass(frozen=True)
class Spec:
    ops: tuple[Op, ...]
    depends_on: tuple[int, ...]
    writes: str  # none, exact, missing (declares only part), overlapping (declares a folder)

    def fields(self, index: int) -> dict[str, object]:
        touched = sorted(set().union(*(op.touches() for op in self.ops)))
        declared = {"none": [], "exact": touched, "missing": touched[:1], "overlapping": ["."]}[self.writes]
        fields: dict[str, object] = {"cmd": " && ".join(op.shell() for op in self.ops) or "true"}
        if declared:
            fields["writes"] = declared
        if self.depends_on:
            fields["depends_on"] = [f"t{d}" for d in self.depends_on]
        return fields


OPS = st.builds(Op, st.sampled_from(("append", "replace", "create", "delete", "rename")),
                st.sampled_from(FILES), st.sampled_from(TAGS))


@st.composite
def task_sets(draw: st.DrawFn) -> list[Spec]:
    n = draw(st.integers(2, 5))
    specs = []
    for i in range(n):
        deps = draw(st.sets(st.integers(0, i - 1), max_size=2)) if i else set()
        specs.append(Spec(tuple(draw(st.lists(OPS, min_size=1, max_size=3))), tuple(sorted(deps)),
                          draw(st.sampled_from(("none", "exact", "missing", "overlapping")))))
    return specs


def serial_order(specs: list[Spec]) -> list[int]:
    """Declared order, bent only by dependencies (the order results land in): each time, the
    earliest declared task whose dependencies are done."""
    order: list[int] = []
    while len(order) < len(specs):
        order.append(next(i for i, spec in enumerate(specs)
                          if i not in order and set(spec.depends_on) <= set(order)))
    return order


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(root).parts and p.name != "tasks.toml"}


@pytest.mark.xfail(strict=True, reason="a rewrite with the base's own content lands nothing (see above)")
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(task_sets())
def test_a_parallel_run_equals_its_tasks_one_by_one(tmp_path_factory, specs: list[Spec]) -> None:
    work = tmp_path_factory.mktemp("serial")
    box = Sandbox(work)
    tasks = {f"t{i}": spec.fields(i) for i, spec in enumerate(specs)}
    repo = make_repo(work / "repo", START)
    write_tasks(repo, tasks_toml(tasks, max_parallel=4))
    git(repo, "add", "tasks.toml")
    git(repo, "commit", "-qm", "tasks")
    one_by_one = work / "serial"
    shutil.copytree(repo, one_by_one)
    for i in serial_order(specs):
        subprocess.run(["sh", "-c", str(tasks[f"t{i}"]["cmd"])], cwd=one_by_one, check=True)

    ran = box.cli("run", repo / "tasks.toml", "-q", cwd=repo, timeout=120)  # a run always ends

    assert ran.code == 0, ran
    assert tree(repo) == tree(one_by_one), (ran.out, [s.fields(i) for i, s in enumerate(specs)])
    assert git(repo, "status", "--porcelain") == ""
