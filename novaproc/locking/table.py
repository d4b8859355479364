"""The lock table: which lock requests may hold now. Pure: no files, no processes, no clock.

Owns the grant rule of novaproc's locks and the records they are described with. Paths are
locked hierarchically, shared or exclusive, the way databases do multiple-granularity locking:
a lock on a path puts an intention mode (IS or IX) on every folder above it, so one lookup per
folder finds a conflict up or down the tree. Named resources are counted semaphores. Entries
are served first come, first served: a ticket is the time its request arrived, taken before
the table's mutex (whose kernel lock serves its waiters in no order), and an entry may hold
when no held entry and no earlier waiting entry conflicts with it. A later request never
overtakes a conflicting earlier one, and a whole lock set is granted at once or not at all
(waits point to holders or to earlier tickets: no deadlock). An entry may join the table behind
the line's end but ahead of later waiters, so a waiter told it may hold looks again before it
holds (LockManager._claim). locks.py keeps the table in files shared by processes; this module decides,
and says how one owner's entries are written down (encode_entry, decode_entries).
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from functools import lru_cache

from novaproc.inputs.trust import RESOURCE_NAME

SERIAL_RESOURCES = frozenset({"git", "database", "deploy"})
"""The task kinds that run one at a time machine-wide: resources whose capacity is always 1."""



class Mode(StrEnum):
    SHARED = "shared"
    EXCLUSIVE = "exclusive"


@dataclass(frozen=True, slots=True)
class Owner:
    """The process that holds or waits: shown to whoever it blocks."""

    pid: int = field(default_factory=os.getpid)
    run_id: str | None = None
    label: str = ""  # what the process is, e.g. "novaproc lock make test" or "novaproc run tasks.toml"

    def describe(self) -> str:
        """'run 3f2a (pid 1234)' or 'pid 1234: novaproc lock make'."""
        if self.run_id:
            return f"run {self.run_id} (pid {self.pid})"
        return f"pid {self.pid}: {self.label}" if self.label else f"pid {self.pid}"


@dataclass(frozen=True, slots=True)
class LockRequest:
    """One lock set, taken and released as a whole.

    `key` names it within its owner (the same key is the same request: it keeps its place in
    the queue); `label` is shown to others (a task id, a command). Paths are absolute and
    canonical (paths.canonical); a path both exclusive and shared is exclusive. `resources`
    counts units of named resources; `capacities` says how many units each has (default 1;
    the serial kinds git, database and deploy always 1).
    """

    key: str
    label: str = ""
    exclusive: tuple[str, ...] = ()
    shared: tuple[str, ...] = ()
    resources: Mapping[str, int] = field(default_factory=dict)
    capacities: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        exclusive = frozenset(self.exclusive)
        for path in exclusive | frozenset(self.shared):
            if not isinstance(path, str) or not posixpath.isabs(path) or posixpath.normpath(path) != path:
                raise ValueError(f"lock path must be absolute and normalised, got {path!r}")
        for name, count in {**self.resources, **self.capacities}.items():
            if not RESOURCE_NAME.fullmatch(name) or not isinstance(count, int) or count < 1:
                raise ValueError(f"resource {name!r}: expected a name like 'docker' and a count >= 1")
        object.__setattr__(self, "exclusive", tuple(sorted(exclusive)))
        object.__setattr__(self, "shared", tuple(sorted(frozenset(self.shared) - exclusive)))
        object.__setattr__(self, "resources", dict(sorted(self.resources.items())))
        object.__setattr__(self, "capacities", dict(sorted(self.capacities.items())))

    def __hash__(self) -> int:  # the mappings are never changed after __post_init__
        return hash((self.key, self.label, self.exclusive, self.shared, tuple(self.resources.items()),
                     tuple(self.capacities.items())))

    def capacity(self, name: str) -> int:
        return 1 if name in SERIAL_RESOURCES else self.capacities.get(name, 1)

    def path_modes(self) -> list[tuple[str, Mode]]:
        return [(p, Mode.EXCLUSIVE) for p in self.exclusive] + [(p, Mode.SHARED) for p in self.shared]


@dataclass(frozen=True, slots=True)
class Entry:
    """A request in the table: waiting in line, or holding. Tickets order the line."""

    ticket: int
    owner: str  # the owner's unique token (one per LockManager)
    holder: Owner
    request: LockRequest
    held: bool = False
    since: float = 0.0  # wall-clock time it was queued, then granted


@dataclass(frozen=True, slots=True)
class Blocker:
    """One earlier entry in the way of a request, and on what."""

    what: str  # the path it holds or waits for, or "@name" for a resource
    mode: str  # "exclusive", "shared" or "<count> of <capacity>"
    holder: Owner
    task: str  # the blocking request's label
    held: bool  # False: it waits ahead of us (first come, first served)

    def describe(self, relative_to: str | None = None) -> str:
        """'src/auth.py held by run 3f2a task fix_user (pid 1234)'."""
        what = self.what
        if relative_to and what.startswith("/"):
            rel = posixpath.relpath(what, relative_to)
            what = what if rel == ".." or rel.startswith("../") else rel
        verb = "held" if self.held else "queued earlier"
        if self.holder.run_id:
            who = f"run {self.holder.run_id} task {self.task}" if self.task else f"run {self.holder.run_id}"
        else:
            who = self.holder.label or self.task
        return f"{what} {verb} by {who} (pid {self.holder.pid})" if who else \
            f"{what} {verb} by pid {self.holder.pid}"


@dataclass(frozen=True, slots=True)
class Blocked:
    """try_acquire's answer when the request must wait; it keeps its place in line."""

    request: LockRequest
    blockers: tuple[Blocker, ...]

    def describe(self, relative_to: str | None = None) -> str:
        if not self.blockers:
            return "waiting for a lock"
        first = self.blockers[0].describe(relative_to)
        more = len({(b.holder, b.task) for b in self.blockers}) - 1
        return first + (f" and {more} more" if more > 0 else "")


@dataclass(frozen=True, slots=True)
class Grant:
    """A held lock set; give it back with release()."""

    request: LockRequest
    ticket: int
    granted_at: float  # wall clock
    queued_at: float  # wall clock of the first attempt


@dataclass(frozen=True, slots=True)
class LockInfo:
    """One row of `novaproc locks`: a path or resource, held or waited for."""

    what: str
    mode: str
    held: bool
    pid: int
    run_id: str | None
    task: str
    command: str
    since: float
    ticket: int

    @property
    def state(self) -> str:
        return "held" if self.held else "waiting"

    def to_json(self) -> dict[str, object]:
        return {"what": self.what, "mode": self.mode, "state": self.state, "pid": self.pid,
                "run_id": self.run_id, "task": self.task, "command": self.command,
                "since": round(self.since, 6), "ticket": self.ticket}


# --------------------------------------------------------------- multiple granularity

class _GMode(IntEnum):
    IS = 0
    IX = 1
    S = 2
    X = 3


# Gray's compatibility matrix: COMPATIBLE[a][b] is True when a and b may be held together.
COMPATIBLE = (
    (True, True, True, False),
    (True, True, False, False),
    (True, False, True, False),
    (False, False, False, False),
)


@lru_cache(maxsize=4096)
def ancestors(path: str) -> tuple[str, ...]:
    """The folders above `path`, root first: '/a/b/c' -> ('/', '/a', '/a/b')."""
    if path == "/":
        return ()
    parts = path.split("/")[1:-1]
    return ("/", *("/" + "/".join(parts[: i + 1]) for i in range(len(parts))))


def paths_overlap(a: str, b: str) -> bool:
    """One path is the other or lies under it."""
    if a == b or a == "/" or b == "/":
        return True
    return b.startswith(a + "/") or a.startswith(b + "/")


@lru_cache(maxsize=4096)
def granularity_modes(request: LockRequest) -> dict[str, set[_GMode]]:
    """The modes `request` puts on each node of the path tree (intentions on the folders above).

    Cached: a queued request is looked at again and again. Callers must not change the result.
    """
    nodes: dict[str, set[_GMode]] = {}
    for path, mode in request.path_modes():
        own, intention = (_GMode.X, _GMode.IX) if mode is Mode.EXCLUSIVE else (_GMode.S, _GMode.IS)
        nodes.setdefault(path, set()).add(own)
        for folder in ancestors(path):
            nodes.setdefault(folder, set()).add(intention)
    return nodes


class _Granted:
    """Group modes per node and units per resource of a prefix of the line."""

    def __init__(self) -> None:
        self.nodes: dict[str, list[int]] = {}  # node -> count per _GMode
        self.units: dict[str, int] = {}

    def fits(self, request: LockRequest, modes: dict[str, set[_GMode]]) -> bool:
        for node, wanted in modes.items():
            counts = self.nodes.get(node)
            if counts and any(n and not COMPATIBLE[w][g] for w in wanted for g, n in enumerate(counts)):
                return False
        for name, n in request.resources.items():
            used = self.units.get(name, 0)
            if used and used + n > request.capacity(name):
                return False  # a request above the whole capacity may still run alone
        return True

    def add(self, request: LockRequest, modes: dict[str, set[_GMode]]) -> None:
        for node, wanted in modes.items():
            counts = self.nodes.setdefault(node, [0, 0, 0, 0])
            for w in wanted:
                counts[w] += 1
        for name, n in request.resources.items():
            self.units[name] = self.units.get(name, 0) + n


def conflicts(a: LockRequest, b: LockRequest) -> list[tuple[str, Mode]]:
    """The paths of `b` that conflict with `a`, with b's mode: they overlap and one is exclusive."""
    found: list[tuple[str, Mode]] = []
    for q, mq in b.path_modes():
        for p, mp in a.path_modes():
            if (mp is Mode.EXCLUSIVE or mq is Mode.EXCLUSIVE) and paths_overlap(p, q):
                found.append((q, mq))
                break
    return found


# --------------------------------------------------------------------------- the table

class LockTable:
    """Entries in ticket order; an entry may hold when no held entry and no earlier entry
    conflicts with it."""

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self._entries: dict[int, Entry] = {}
        for entry in entries:
            self.add(entry)

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entry: Entry) -> None:
        if entry.ticket in self._entries:
            raise ValueError(f"ticket {entry.ticket} is already in the table")
        self._entries[entry.ticket] = entry

    def remove(self, ticket: int) -> Entry | None:
        return self._entries.pop(ticket, None)

    def remove_owner(self, owner: str) -> list[Entry]:
        """Drop every entry of `owner` (it released everything, or died)."""
        gone = [e for e in self._entries.values() if e.owner == owner]
        for entry in gone:
            del self._entries[entry.ticket]
        return gone

    def entries(self) -> list[Entry]:
        return [self._entries[t] for t in sorted(self._entries)]

    def get(self, ticket: int) -> Entry | None:
        return self._entries.get(ticket)

    def free_ticket(self, arrived: int) -> int:
        """`arrived` (a request's arrival time), or the next number no entry has."""
        while arrived in self._entries:
            arrived += 1
        return arrived

    def ahead(self, ticket: int) -> list[Entry]:
        """The entries before `ticket` in the line: every earlier one, and every holder (in no
        order: the callers that show them sort them)."""
        return [e for e in self._entries.values() if e.ticket < ticket or (e.held and e.ticket != ticket)]

    def may_hold(self, ticket: int) -> bool:
        """No held entry and no earlier waiting entry conflicts with this one."""
        entry = self._entries[ticket]
        ahead = self.ahead(ticket)
        if not ahead:
            return True  # first in line: the common, uncontended case
        granted = _Granted()
        for other in ahead:
            granted.add(other.request, granularity_modes(other.request))
        return granted.fits(entry.request, granularity_modes(entry.request))

    def grantable(self) -> list[Entry]:
        """The waiting entries that may hold now, in ticket order (one pass over the line)."""
        granted, ready = _Granted(), []
        for entry in self.entries():  # holders first: they stand before every waiter
            if entry.held:
                granted.add(entry.request, granularity_modes(entry.request))
        for entry in self.entries():
            modes = granularity_modes(entry.request)
            if not entry.held:
                if granted.fits(entry.request, modes):
                    ready.append(entry)
                granted.add(entry.request, modes)
        return ready

    def blockers(self, ticket: int) -> list[Blocker]:
        """Who stands in the way of an entry: conflicting holders, then earlier waiters."""
        entry = self._entries[ticket]
        earlier = self.ahead(ticket)
        found: list[tuple[bool, int, Blocker]] = []
        for other in earlier:
            for path, mode in conflicts(entry.request, other.request):
                found.append((not other.held, other.ticket, _blocker(other, path, str(mode))))
        for name, n in entry.request.resources.items():
            users = [e for e in earlier if name in e.request.resources]
            used = sum(e.request.resources[name] for e in users)
            if used and used + n > entry.request.capacity(name):
                for other in users:
                    mode = f"{other.request.resources[name]} of {entry.request.capacity(name)}"
                    found.append((not other.held, other.ticket, _blocker(other, "@" + name, mode)))
        return [b for _, _, b in sorted(found, key=lambda f: (f[0], f[1]))]

    def rows(self) -> list[LockInfo]:
        """Every path and resource of every entry, in ticket order: what `novaproc locks` shows."""
        rows: list[LockInfo] = []
        for e in self.entries():
            items = [(p, str(m)) for p, m in e.request.path_modes()]
            items += [("@" + name, f"{n} of {e.request.capacity(name)}")
                      for name, n in e.request.resources.items()]
            rows += [LockInfo(what, mode, e.held, e.holder.pid, e.holder.run_id, e.request.label,
                              e.holder.label, e.since, e.ticket) for what, mode in items]
        return rows


# --------------------------------------------------------------------- owner files

FORMAT = 1  # of an owner file: {"format", "pid", "run_id", "label", "entries": [rows]}


def encode_header(owner: Owner) -> bytes:
    """An owner file up to its entries; the entries follow as JSON rows, then "]}"."""
    head = {"format": FORMAT, "pid": owner.pid, "run_id": owner.run_id, "label": owner.label}
    return json.dumps(head, separators=(",", ":"))[:-1].encode() + b',"entries":['


def encode_entry(e: Entry) -> bytes:
    """One entry as a JSON row: written once when it changes, joined into the owner file."""
    row = [e.ticket, e.request.key, e.request.label, e.request.exclusive, e.request.shared,
           e.request.resources, e.request.capacities, e.held, e.since]
    return json.dumps(row, separators=(",", ":")).encode()


def decode_entries(raw: bytes, token: str) -> list[Entry]:
    """The entries of owner `token` from its file; ValueError/KeyError/TypeError when torn."""
    data = json.loads(raw)
    if data["format"] != FORMAT:
        raise ValueError(f"owner file format {data['format']}")
    holder = Owner(pid=data["pid"], run_id=data["run_id"], label=data["label"])
    return [Entry(ticket=t, owner=token, holder=holder, held=held, since=since,
                  request=LockRequest(key, label, tuple(x), tuple(s), res, caps))
            for t, key, label, x, s, res, caps, held, since in data["entries"]]


def _blocker(entry: Entry, what: str, mode: str) -> Blocker:
    return Blocker(what=what, mode=mode, holder=entry.holder, task=entry.request.label, held=entry.held)
