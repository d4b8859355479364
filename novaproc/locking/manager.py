"""Path locks and resource semaphores shared by every novaproc process of a user on this machine.

lockdir.py owns the lock folder (and novaproc's only use of portalocker); locktable.py decides
the grants; this module is each process's side of them.
Each LockManager (one per process: a run's supervisor, `novaproc lock`) writes its own entries,
held and waiting, to its own owner file and holds a kernel lock on that file for as long as it
lives. The table is the union of the owner files; each read-decide-write is one short critical
section under the kernel lock of table.lock. Waiters sleep in select() on their bell (and on
pidfds of the processes in their way). A release writes to the bell of each waiter that may
now hold which of its tickets may; that waiter claims without reading the table again.

    LockManager A                    <lock folder>, 0700                    LockManager B
    each transaction  --flock EX-->  table.lock (+ owner-list generation)  <--flock EX--
    for life          --flock EX-->  A.owner   <--  pread; probe flock SH|NB: granted = A died
    waits in select() ------------>  A.bell    <--  "ticket\n" when B releases or stops waiting

Never stale: a dead owner's flock goes with it (SIGKILL too), and an owner that no longer holds
its flock is dead, whatever its pid says; its entries stop counting at the next look. Every
file is opened O_CLOEXEC, and a child made by os.fork closes its copies at once, so neither a
task process nor a forked worker keeps a lock alive. An owner file is deleted only by its owner
or after its owner died; table.lock is never deleted.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path

from novaproc.errors import BusyError, EnvironmentFault, InternalError
from novaproc.inputs import paths
from novaproc.locking.folder import (
    OPEN,
    Folder,
    close_all,
    default_lock_dir,
    open_owner_file,
    prepare_lock_dir,
)
from novaproc.locking.table import (
    Blocked,
    Blocker,
    Entry,
    Grant,
    LockInfo,
    LockRequest,
    LockTable,
    Mode,
    Owner,
    encode_entry,
    encode_header,
)

__all__ = ["Blocked", "Blocker", "Grant", "LockInfo", "LockManager", "LockRequest", "Mode", "Owner",
           "default_lock_dir", "prepare_lock_dir", "run_request", "snapshot", "task_request"]

POLL_INTERVAL = 0.1  # seconds: a waiter's safety net; releases ring the bell, deaths wake a pidfd
# ---------------------------------------------------------------------------- manager

class LockManager:
    """One process's side of the machine-wide lock table: takes, waits for and gives back lock sets.

    `try_acquire` never waits (the supervisor's loop); `acquire` blocks (the `lock` command).
    A request that must wait joins the line at its first attempt and keeps its place until it is
    granted or cancelled; `fileno()` becomes readable when it may be worth trying again.
    """

    def __init__(self, lock_dir: Path | None = None, *, owner: Owner | None = None) -> None:
        self.owner = owner or Owner()
        if self.owner.pid != os.getpid():
            raise ValueError(f"owner pid {self.owner.pid} is not this process ({os.getpid()})")
        self.lock_dir = prepare_lock_dir(lock_dir)
        self._folder = Folder(self.lock_dir)
        self._token = f"{os.getpid()}-{os.urandom(6).hex()}"
        self._mine: dict[str, Entry] = {}  # by request key
        self._rows: dict[str, bytes] = {}  # encoded entries, by request key
        self._header = encode_header(self.owner)
        self._fds: dict[str, int] = {}  # "owner" and "bell"
        self._written = 0
        weakref.finalize(self, close_all, self._fds)
        with self._folder.locked():
            self._create_files()
        _MANAGERS.add(self)

    def _create_files(self) -> None:
        """Owner file first (locked before anyone can list it), then the bell; then announce."""
        base = self.lock_dir / self._token
        try:
            self._fds["owner"] = open_owner_file(f"{base}.owner")
            self._save()
            os.mkfifo(f"{base}.bell", 0o600)
            self._fds["bell"] = os.open(f"{base}.bell", os.O_RDWR | os.O_NONBLOCK | OPEN)
        except OSError as e:
            raise EnvironmentFault(f"cannot create {base}.owner: {e.strerror}") from None
        self._folder.bump()

    # -- the interface

    def try_acquire(self, request: LockRequest) -> Grant | Blocked:
        """Take the whole lock set now, or join the line (first call) and say who is in the way."""
        self._read_bell()
        arrived = time.monotonic_ns()  # before the mutex: its waiters are served in no order
        with self._folder.locked():
            self._folder.check_still_there()
            table = LockTable([*self._folder.others(self._token), *self._mine.values()])
            entry = self._entry_for(request, table, arrived)
            if entry.held:
                return Grant(request, entry.ticket, entry.since, entry.since)
            blockers, woken = self._blockers(table, entry)
            if not blockers:
                self._keep(Entry(entry.ticket, entry.owner, entry.holder, request, True, time.time()))
            elif request.key not in self._mine:
                self._keep(entry)
        self._folder.ring(woken)
        if blockers:
            return Blocked(request, tuple(blockers))
        return Grant(request, entry.ticket, self._mine[request.key].since, entry.since)

    def acquire(self, request: LockRequest, timeout: float | None = None) -> Grant:
        """Wait for the whole lock set; BusyError (exit 75) after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        watch = _PidWatch()
        try:
            while True:
                outcome = self.try_acquire(request)
                if isinstance(outcome, Grant):
                    return outcome
                remaining = POLL_INTERVAL if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    raise BusyError(f"gave up after {timeout:g}s: {outcome.describe()}")
                if watch.wait(self._fds["bell"], outcome.blockers, min(remaining, POLL_INTERVAL)) and \
                        self._mine[request.key].ticket in self._read_bell() and \
                        (grant := self._claim(request)) is not None:
                    return grant
        except BaseException:
            self.cancel(request)
            raise
        finally:
            watch.close()

    def release(self, grant: Grant) -> None:
        """Give the lock set back and wake whoever waits. Releasing twice does nothing."""
        entry = self._mine.get(grant.request.key)
        if entry is not None and entry.ticket == grant.ticket:
            self._remove(grant.request.key)

    def cancel(self, request: LockRequest) -> None:
        """Stop waiting for `request` (and release it if it was granted meanwhile)."""
        entry = self._mine.get(request.key)
        if entry is not None and entry.request == request:
            self._remove(request.key)

    def snapshot(self) -> list[LockInfo]:
        """Every live holder and waiter on the machine, in line order."""
        with self._folder.locked():
            return LockTable([*self._folder.others(self._token, probe=True), *self._mine.values()]).rows()

    def fileno(self) -> int:
        """Readable when a lock this owner waits for may have come free: add it to a wait set."""
        return self._fds["bell"]

    def life_fd(self) -> int:
        """The file whose kernel lock says this owner lives. A child given it keeps this
        owner's locks alive for as long as it runs, even past this process, as flock(1)'s
        command keeps its lock."""
        return self._fds["owner"]

    def close(self) -> None:
        """Release everything, delete this owner's files and wake the waiters. Idempotent."""
        if "owner" not in self._fds:
            return
        woken: dict[str, list[int]] = {}
        self._mine.clear()
        self._rows.clear()
        with self._folder.locked():
            woken = self._next_in_line()
            self._folder.forget(self._token)
        self._folder.ring(woken)
        close_all(self._fds)
        self._folder.close()

    def __enter__(self) -> LockManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inside a transaction

    def _entry_for(self, request: LockRequest, table: LockTable, arrived: int) -> Entry:
        entry = self._mine.get(request.key)
        if entry is None:
            entry = Entry(ticket=table.free_ticket(arrived), owner=self._token,
                          holder=self.owner, request=request, since=time.time())
            table.add(entry)
        elif entry.request != request:
            raise ValueError(f"lock request {request.key!r} changed while queued or held; cancel it first")
        return entry

    def _blockers(self, table: LockTable, entry: Entry) -> tuple[list[Blocker], dict[str, list[int]]]:
        """Who is in the way; owners found dead on the way are dropped, and their waiters woken."""
        if table.may_hold(entry.ticket):
            return [], {}
        earlier = {e.owner for e in table.ahead(entry.ticket) if e.owner != self._token}
        dead = {token for token in earlier if not self._folder.alive(token)}
        for token in dead:
            table.remove_owner(token)
            self._folder.forget(token)
        woken = _by_owner(e for e in table.grantable() if e.owner != self._token) if dead else {}
        if dead and table.may_hold(entry.ticket):
            return [], woken
        return table.blockers(entry.ticket), woken

    def _remove(self, key: str) -> None:
        with self._folder.locked():
            if self._mine.pop(key, None) is None:
                return
            del self._rows[key]
            self._save()
            woken = self._next_in_line()
        self._folder.ring(woken)

    def _next_in_line(self) -> dict[str, list[int]]:
        """The waiting entries that may hold now, by owner: only they are worth waking."""
        return _by_owner(LockTable([*self._folder.others(self._token), *self._mine.values()]).grantable())

    def _claim(self, request: LockRequest) -> Grant | None:
        """Hold an entry a releaser said may hold, unless a request that arrived before it has
        joined the line since (see LockTable): then None, and it waits on."""
        with self._folder.locked():
            entry = self._mine[request.key]
            table = LockTable([*self._folder.others(self._token), *self._mine.values()])
            if not table.may_hold(entry.ticket):
                return None
            self._keep(Entry(entry.ticket, entry.owner, entry.holder, request, True, time.time()))
        return Grant(request, entry.ticket, self._mine[request.key].since, entry.since)

    def _keep(self, entry: Entry) -> None:
        self._mine[entry.request.key] = entry
        self._rows[entry.request.key] = encode_entry(entry)
        self._save()

    def _save(self) -> None:
        """Rewrite this owner's file in one write; padding beats a second syscall to truncate."""
        fd = self._fds["owner"]
        data = self._header + b",".join(self._rows.values()) + b"]}"
        if self._written - len(data) > 4096:
            os.ftruncate(fd, len(data))
            self._written = len(data)
        os.pwrite(fd, data.ljust(self._written), 0)
        self._written = max(self._written, len(data))

    def _read_bell(self) -> set[int]:
        """Empty the bell; the tickets releasers said may hold now."""
        if "bell" not in self._fds:
            raise InternalError("LockManager used after close(), or in a child forked from its process")
        chunks: list[bytes] = []
        with contextlib.suppress(BlockingIOError):
            while not chunks or len(chunks[-1]) == 65536:  # a short read emptied it: no second syscall
                chunks.append(os.read(self._fds["bell"], 65536))
        return {int(t) for t in b"".join(chunks).split() if t.isdigit()}

    def _abandon(self) -> None:
        close_all(self._fds)


class _PidWatch:
    """pidfds of the processes in our way, so a holder's death wakes a waiter at once (Linux)."""

    def __init__(self) -> None:
        self._fds: dict[int, int] = {}
        self._exited: set[int] = set()

    def wait(self, bell: int, blockers: Iterable[Blocker], timeout: float) -> bool:
        """Sleep until the bell rings (True), a process in our way exits, or `timeout` passes."""
        pids = {b.holder.pid for b in blockers} - {os.getpid()} - self._exited
        for pid in set(self._fds) - pids:
            os.close(self._fds.pop(pid))
        for pid in pids - set(self._fds):
            try:
                self._fds[pid] = os.pidfd_open(pid)
            except ProcessLookupError:
                self._exited.add(pid)
                return False  # gone already: look again now
            except (OSError, AttributeError):
                self._exited.add(pid)  # no pidfd here: the poll interval covers it
        ready, _, _ = select.select([bell, *self._fds.values()], [], [], timeout)
        for pid, fd in list(self._fds.items()):
            if fd in ready:  # exited; its lock is free unless its file lives on elsewhere
                self._exited.add(pid)
                os.close(self._fds.pop(pid))
        return bell in ready

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _by_owner(entries: Iterable[Entry]) -> dict[str, list[int]]:
    grants: dict[str, list[int]] = {}
    for e in entries:
        grants.setdefault(e.owner, []).append(e.ticket)
    return grants


def task_request(key: str, label: str, *, root: str, writes: Iterable[str] = (), reads: Iterable[str] = (),
                 resources: Mapping[str, int] | None = None,
                 capacities: Mapping[str, int] | None = None) -> LockRequest:
    """A task's lock set from its declared paths (repo-relative or absolute, globs allowed).

    Paths become canonical the way every novaproc process names them, so two runs of different
    repositories agree on a shared absolute file. Raises paths.PathEscapes for '../' out of root.
    """
    def canonical(declared: Iterable[str]) -> tuple[str, ...]:
        return tuple(paths.canonical(paths.normalize(p, root), root) for p in declared)

    return LockRequest(key, label, exclusive=canonical(writes), shared=canonical(reads),
                       resources=dict(resources or {}), capacities=dict(capacities or {}))


def run_request(tasks_file: str, run_id: str) -> LockRequest:
    """What a run holds for its whole life, so `run --if-busy` sees another live run of the file.

    A resource, not a path lock: a task that writes the folder holding the tasks file must not
    wait for its own run. `acquire(run_request(...), timeout=0)` is --if-busy skip (BusyError,
    exit 75); `acquire(run_request(...))` is --if-busy wait.
    """
    import hashlib  # not at the top: `novaproc lock` needs no digest, and OpenSSL's loading is ~2 ms

    digest = hashlib.sha256(os.path.realpath(tasks_file).encode()).hexdigest()[:16]
    return LockRequest(f"run {run_id}", resources={f"run.{digest}": 1})


def snapshot(lock_dir: Path | None = None) -> list[LockInfo]:
    """Every live holder and waiter, without becoming an owner (for `novaproc locks`)."""
    folder = Folder(prepare_lock_dir(lock_dir))
    try:
        with folder.locked():
            return LockTable(folder.others(None, probe=True)).rows()
    finally:
        folder.close()


# ------------------------------------------------------------------------------ fork

_MANAGERS: weakref.WeakSet[LockManager] = weakref.WeakSet()


def _abandon_managers_in_child() -> None:
    """A forked child must not use its parent's managers (lockdir drops their files)."""
    for manager in list(_MANAGERS):
        manager._abandon()


os.register_at_fork(after_in_child=_abandon_managers_in_child)
