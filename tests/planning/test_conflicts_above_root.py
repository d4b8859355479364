"""Conflicts through the folders above the repository's root: relative paths are walked from the
root's own node, so an absolute path at or above the root (a write of /srv, a read of /) must
still meet them, also after it replaced the root's node, and a path outside the root still
conflicts with itself."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from novaproc.inputs.kinds import Kind
from novaproc.inputs.taskfile import Task
from novaproc.planning.conflicts import Conflict, find_conflicts
from novaproc.planning.plan import make_plan

ROOT = "/srv/repo"
# relative, absolute inside, at, above and beside the root, and spellings that are not normal
POOL = ("a", "a/b", ".", "d/e.txt", "/", "/srv", "/srv/repo", "/srv/repo/a", "/srv/other",
        "/var/cache/x", "a/", "./a", "a//b")


def task(tid: str, writes: tuple[str, ...] = (), reads: tuple[str, ...] = ()) -> Task:
    return Task(id=tid, cmd="true", kind=Kind.NORMAL, writes=writes, reads=reads)


def conflicts_of(tasks: list[Task]) -> list[tuple[str, str, tuple[str, ...], str]]:
    found = find_conflicts(tasks, ROOT, [t.id for t in tasks])
    return [(c.first, c.second, c.paths, c.why) for c in found]


def test_a_write_above_the_root_comes_between_writers_of_a_relative_path():
    tasks = [task("t0", writes=("a",)), task("t1", writes=("/srv",)), task("t2", writes=("a",))]
    assert conflicts_of(tasks) == [("t0", "t1", ("a",), "write/write"),  # the more specific path
                                   ("t1", "t2", ("a",), "write/write")]


def test_a_read_of_the_file_system_root_waits_for_relative_writers():
    tasks = [task("t0", writes=("a/b",)), task("t1", writes=("d/e.txt",)), task("t2", reads=("/",))]
    assert conflicts_of(tasks) == [("t0", "t2", ("a/b",), "write/read"),
                                   ("t1", "t2", ("d/e.txt",), "write/read")]


def test_the_root_spelled_absolute_is_the_root():
    tasks = [task("t0", writes=(".",)), task("t1", reads=("/srv/repo",)), task("t2", writes=("/srv/repo/a",))]
    assert conflicts_of(tasks) == [("t0", "t1", (".", "/srv/repo"), "write/read"),
                                   ("t0", "t2", ("/srv/repo/a",), "write/write"),
                                   ("t1", "t2", ("/srv/repo/a",), "write/read")]


def test_an_absolute_path_outside_the_root_conflicts_with_itself():
    tasks = [task("t0", writes=("/var/cache/x",)), task("t1", writes=("/var/cache/x",)),
             task("t2", writes=("x",))]
    assert find_conflicts(tasks, ROOT, ["t0", "t1", "t2"]) == (
        Conflict("t0", "t1", ("/var/cache/x",), "write/write"),)


def components(path: str) -> tuple[str, ...]:
    """The oracle's path: its parts from the file-system root, sharing no code with novaproc."""
    full = path if path.startswith("/") else f"{ROOT}/{path}"
    return tuple(part for part in full.split("/") if part and part != ".")


def overlap(p: str, q: str) -> bool:
    a, b = components(p), components(q)
    n = min(len(a), len(b))
    return a[:n] == b[:n]


accesses = st.lists(st.sampled_from(POOL), max_size=2, unique=True)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(accesses, accesses), min_size=1, max_size=10))
def test_every_overlap_with_a_writer_is_ordered_and_every_edge_is_one(declared):
    tasks = [task(f"t{i}", tuple(w), tuple(r)) for i, (w, r) in enumerate(declared)]
    plan = make_plan(tasks, root=ROOT, slots=4, isolation="none")
    real = set()
    for i, (wx, rx) in enumerate(declared):
        for j in range(i + 1, len(declared)):
            wy, ry = declared[j]
            if any(overlap(p, q) for p in wx for q in (*wy, *ry)) or any(
                    overlap(p, q) for p in wy for q in rx):
                real.add((f"t{i}", f"t{j}"))
    for first, second in real:
        assert first in plan.graph.ancestors([second]), f"{second} does not wait for {first}"
    assert {(c.first, c.second) for c in plan.conflicts} <= real
