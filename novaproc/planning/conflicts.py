"""Conflicts: which tasks must wait for which because their paths overlap with a writer among
them, or because they share a serial kind. Pure.

The result is a chain per path, never every pair: tasks are visited in order, and each access
waits only for the accesses it would overlap that nothing later has already put behind it. A
hundred writers of one folder are 99 ordering edges, not 4,950; any two of them still wait for
each other through the chain. Readers are not chained with each other (they may run
together), so k readers of what m writers touch remain k * m edges: that many are needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from novaproc.inputs import paths
from novaproc.inputs.kinds import SERIAL_KINDS, Kind
from novaproc.inputs.taskfile import Task

WW, WR = "write/write", "write/read"


@dataclass(frozen=True, slots=True)  # slots: a third of the time and size of 100,000 of them
class Conflict:
    """Two tasks that must not run together; `first` runs before `second`."""

    first: str
    second: str
    paths: tuple[str, ...]
    why: str  # "write/write", "write/read", or a serial kind

    def __reduce__(self) -> tuple[type[Conflict], tuple[str, str, tuple[str, ...], str]]:
        # pickled as its fields (the plan's memo): a frozen class's state, set field by field,
        # loaded 100,000 five times slower
        return Conflict, (self.first, self.second, self.paths, self.why)


# what a task waits for: (its position, the earlier task's) -> [the paths, why]
_Found = dict[tuple[int, int], list]


_NO_CHILDREN: Mapping[str, _Node] = MappingProxyType({})  # shared by the leaves: a dict each was most
# of the trie's allocations


class _Node:
    """A path component in the trie of accesses: the last writer of exactly this path, the
    readers since, and how many writers there are at or below it (so a read of a folder walks
    only the branches where something was written). Tasks are their positions in the order."""

    __slots__ = ("children", "readers", "spelled", "writer", "writers_below")

    def __init__(self) -> None:
        self.children: Mapping[str, _Node] = _NO_CHILDREN  # a dict once it has one
        self.writer = -1  # the task, or -1 for none
        self.spelled = ""  # the path as that writer declared it
        self.readers: Sequence[tuple[int, str]] = ()  # (task, path as declared); a list once one reads
        self.writers_below = 0


def find_conflicts(tasks: Sequence[Task], root: str, order: Sequence[str]) -> tuple[Conflict, ...]:
    """The ordering edges between tasks, each from the earlier in `order` (declared order, bent
    only by declared dependencies) to the later, sorted by that order."""
    by_id = {t.id: t for t in tasks}
    found: _Found = {}
    trie = _Trie(root)
    last_of_kind: dict[Kind, int] = {}
    for i, tid in enumerate(order):
        task = by_id[tid]
        for path in task.writes:
            trie.visit(i, path, True, found)
        for path in task.reads:
            trie.visit(i, path, False, found)
        if task.kind in SERIAL_KINDS:
            if task.kind in last_of_kind:
                found.setdefault((last_of_kind[task.kind], i), [set(), str(task.kind)])
            last_of_kind[task.kind] = i
    # positions sort as the order does, and pairs of numbers alone sort fast: no key function,
    # nor the values compared, over 100,000 pairs
    conflicts = []
    for a, b in sorted(found):
        where, why = found[a, b]
        named = tuple(sorted(where)) if len(where) > 1 else tuple(where)
        conflicts.append(Conflict(order[a], order[b], named, why))
    return tuple(conflicts)


def _record(found: _Found, key: tuple[int, int], where: tuple[str, ...], why: str) -> None:
    """One more reason for the edge `key`: its paths add up, and write/write outranks the rest."""
    entry = found.get(key)
    if entry is None:
        found[key] = [set(where), why]
        return
    entry[0].update(where)
    if why == WW:
        entry[1] = WW


class _Trie:
    """The accesses so far, by path component from the file-system root.

    Most paths are relative, and walking the root's own components (/home/me/src/repo) for each
    of 100,000 accesses was most of the time: a relative path already normal is walked from the
    root's node. The folders above the root are left out of its line (nothing can be found
    there) until an absolute path reaches them or the root; from then on they are in it."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.top = _Node()
        self._root_key = paths.key(".", root)
        self._above_root = False  # whether an absolute path has reached the folders above it
        self._line: list[_Node] | None = None  # the root's (None: to be found again)

    def line(self, path: str, write: bool) -> list[_Node]:
        """The nodes from the file-system root (or the repository's) down to `path`'s, made
        where missing."""
        if paths.is_normal(path):
            return _walk(self._root_line(), path.split("/"))  # what paths.key gives, without its join and
        key = paths.key(path, self.root)  # normpath
        depth = len(self._root_key)
        if key[:depth] == self._root_key:  # the root or in it
            return _walk(self._root_line(), key[depth:])
        if not paths.overlaps(key, self._root_key):  # beside the root: its line is not crossed
            return _walk([self.top], key[1:])
        self._reach_above_root()
        if write:  # the write is about to replace a folder above the root, and the root's node
            self._line = None
        return _walk([self.top], key[1:])

    def _root_line(self) -> list[_Node]:
        """A new copy of the root's line: from the file-system root once an absolute path has
        reached above it, else the root's node alone."""
        if self._line is None:
            self._line = _walk([self.top], self._root_key[1:])
            if not self._above_root:
                del self._line[:-1]
        return self._line.copy()

    def _reach_above_root(self) -> None:
        """Put the folders above the root in the root's line: their counts of writers, kept only
        for absolute paths so far, gain those of relative ones."""
        if self._above_root:
            return
        self._above_root = True
        line = _walk([self.top], self._root_key[1:])
        for above in line[:-1]:
            above.writers_below += line[-1].writers_below
        self._line = None

    def visit(self, tid: int, path: str, write: bool, found: _Found) -> None:
        """Record `tid`'s access to `path`, and in `found` each earlier access it must wait for
        (with the more specific path, or both spellings of one)."""
        line = self.line(path, write)
        node = line.pop()
        why = WW if write else WR
        for above in line:  # a folder above: the path itself is the more specific one
            if above.writer >= 0 and above.writer != tid:
                _record(found, (above.writer, tid), (path,), why)
            if write:
                for reader, _ in above.readers:
                    if reader != tid:
                        _record(found, (reader, tid), (path,), WR)
        if node.writer >= 0 and node.writer != tid:  # the same path: two names of one
            _record(found, (node.writer, tid), (path, node.spelled), why)
        if write:
            for reader, spelled in node.readers:
                if reader != tid:
                    _record(found, (reader, tid), (path, spelled), WR)
        for child in node.children.values():
            _below(child, tid, write, found)
        if not write:
            if node.readers:
                node.readers.append((tid, path))  # type: ignore[attr-defined]
            else:
                node.readers = [(tid, path)]
            return
        # everything at and below the path now waits for this writer, and whatever comes later
        # meets it on its way down: what it replaces needs no edge of its own any more
        change = 1 - node.writers_below  # the writers it replaces, against itself
        node.children = _NO_CHILDREN
        node.readers = ()
        node.writer, node.spelled = tid, path
        node.writers_below = 1
        for above in line:
            above.writers_below += change


def _walk(line: list[_Node], parts: Sequence[str]) -> list[_Node]:
    """`line` continued down `parts`, with the nodes missing made."""
    node = line[-1]
    for part in parts:
        child = node.children.get(part)
        if child is None:
            if node.children is _NO_CHILDREN:
                node.children = {}
            child = node.children[part] = _Node()  # type: ignore[index]
        line.append(child)
        node = child
    return line


def _below(node: _Node, tid: int, write: bool, found: _Found) -> None:
    """The accesses under the path `tid` accesses: its own path is the less specific one, so
    each names its own. A reader waits only for the writers there."""
    why = WW if write else WR
    stack = [node]
    while stack:
        current = stack.pop()
        if not write and current.writers_below == 0:
            continue
        if current.writer >= 0 and current.writer != tid:
            _record(found, (current.writer, tid), (current.spelled,), why)
        if write:
            for reader, spelled in current.readers:
                if reader != tid:
                    _record(found, (reader, tid), (spelled,), WR)
        stack.extend(current.children.values())
