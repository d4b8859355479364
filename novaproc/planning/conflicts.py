"""Conflicts: which tasks must wait for which because their paths overlap with a writer among
them, or because they share a serial kind. Pure.

The result is a chain per path, never every pair: tasks are visited in order, and each access
waits only for the accesses it would overlap that nothing later has already put behind it. A
hundred writers of one folder are 99 ordering edges, not 4,950; any two of them still wait for
each other through the chain. Readers are not chained with each other (they may run
together), so k readers of what m writers touch remain k * m edges: that many are needed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from novaproc.inputs import paths
from novaproc.inputs.kinds import SERIAL_KINDS, Kind
from novaproc.inputs.taskfile import Task

WW, WR = "write/write", "write/read"


@dataclass(frozen=True)
class Conflict:
    """Two tasks that must not run together; `first` runs before `second`."""

    first: str
    second: str
    paths: tuple[str, ...]
    why: str  # "write/write", "write/read", or a serial kind


class _Node:
    """A path component in the trie of accesses: the last writer of exactly this path, the
    readers since, and how many writers there are at or below it (so a read of a folder walks
    only the branches where something was written)."""

    __slots__ = ("children", "readers", "writer", "writers_below")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.writer: tuple[str, str] | None = None  # (task, path as declared)
        self.readers: list[tuple[str, str]] = []
        self.writers_below = 0


def find_conflicts(tasks: Sequence[Task], root: str, order: Sequence[str]) -> tuple[Conflict, ...]:
    """The ordering edges between tasks, each from the earlier in `order` (declared order, bent
    only by declared dependencies) to the later, sorted by that order."""
    position = {tid: i for i, tid in enumerate(order)}
    by_id = {t.id: t for t in tasks}
    found: dict[tuple[str, str], tuple[set[str], str]] = {}
    trie = _Node()
    last_of_kind: dict[Kind, str] = {}
    for tid in order:
        task = by_id[tid]
        for mode, declared in (("w", task.writes), ("r", task.reads)):
            for path in declared:
                for other, where, why in _visit(trie, tid, path, mode, root):
                    entry = found.setdefault((other, tid), (set(), why))
                    entry[0].update(where)
                    if why == WW and entry[1] != WW:
                        found[(other, tid)] = (entry[0], WW)
        if task.kind in SERIAL_KINDS:
            if task.kind in last_of_kind:
                found.setdefault((last_of_kind[task.kind], tid), (set(), str(task.kind)))
            last_of_kind[task.kind] = tid
    pairs = sorted(found.items(), key=lambda kv: (position[kv[0][0]], position[kv[0][1]]))
    return tuple(Conflict(a, b, tuple(sorted(p)), why) for (a, b), (p, why) in pairs)


def _visit(trie: _Node, tid: str, path: str, mode: str,
           root: str) -> Iterator[tuple[str, tuple[str, ...], str]]:
    """Record `tid`'s access to `path`; yields (earlier task, the more specific path(s), why)
    for each earlier access it must wait for."""
    line = [trie]
    for part in paths.key(path, root)[1:]:
        line.append(line[-1].children.setdefault(part, _Node()))
    node = line[-1]
    for above in line[:-1]:  # a folder above: the path itself is the more specific one
        yield from _against(above, tid, (path,), mode, with_readers=mode == "w")
    yield from _against(node, tid, (path,), mode, with_readers=mode == "w", same=True)
    for child in node.children.values():
        yield from _below(child, tid, mode)
    if mode == "r":
        node.readers.append((tid, path))
        return
    # everything at and below the path now waits for this writer, and whatever comes later
    # meets it on its way down: what it replaces needs no edge of its own any more
    change = 1 - node.writers_below  # the writers it replaces, against itself
    node.children.clear()
    node.readers = []
    node.writer = (tid, path)
    node.writers_below = 1
    for above in line[:-1]:
        above.writers_below += change


def _against(node: _Node, tid: str, where: tuple[str, ...], mode: str, *, with_readers: bool,
             same: bool = False) -> Iterator[tuple[str, tuple[str, ...], str]]:
    """The earlier accesses at `node` that `tid`'s access (of mode `mode`) must wait for. At the
    same node both spellings of the path count, as two names of one file."""
    if node.writer is not None and node.writer[0] != tid:
        writer, spelled = node.writer
        yield writer, (*where, spelled) if same else where, WW if mode == "w" else WR
    if with_readers:
        for reader, spelled in node.readers:
            if reader != tid:
                yield reader, (*where, spelled) if same else where, WR


def _below(node: _Node, tid: str, mode: str) -> Iterator[tuple[str, tuple[str, ...], str]]:
    """The accesses under the path `tid` accesses: its own path is the less specific one, so
    each names its own. A reader waits only for the writers there."""
    stack = [node]
    while stack:
        current = stack.pop()
        if mode == "r" and current.writers_below == 0:
            continue
        if current.writer is not None and current.writer[0] != tid:
            yield current.writer[0], (current.writer[1],), WW if mode == "w" else WR
        if mode == "w":
            yield from ((r, (p,), WR) for r, p in current.readers if r != tid)
        stack.extend(current.children.values())

