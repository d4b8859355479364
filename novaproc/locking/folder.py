"""The lock folder shared by every novaproc process of a user: its safety checks, the table
mutex, each owner's file and bell, and novaproc's only use of portalocker.

    <lock folder>, 0700
      table.lock     the mutex of every read-decide-write (never deleted)
      <owner>.owner  an owner's entries; its kernel lock, held for life, says it is alive
      <owner>.bell   a fifo: a byte wakes the owner when something it waits for may be free
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path

import portalocker
from portalocker.portalocker import FlockLocker

from novaproc.errors import EnvironmentFault, InternalError
from novaproc.fsio import private_dir
from novaproc.locking.table import Entry, decode_entries

ENV_LOCK_DIR = "NOVA_LOCK_DIR"
_MUTEX = "table.lock"
# flock, not lockf: locks belong to an open file, so two managers of one process exclude each other
_LOCKER = FlockLocker()
_EX = portalocker.LockFlags.EXCLUSIVE
_EX_NB = portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING
_SH_NB = portalocker.LockFlags.SHARED | portalocker.LockFlags.NON_BLOCKING
OPEN = os.O_CLOEXEC | os.O_NOFOLLOW


def default_lock_dir() -> Path:
    """$NOVA_LOCK_DIR, else one folder per user for the whole machine."""
    return Path(os.environ.get(ENV_LOCK_DIR) or f"/tmp/novaproc-{os.geteuid()}/locks")


def prepare_lock_dir(path: Path | None = None) -> Path:
    """The lock folder, created 0700 if missing; refuses one other users could tamper with."""
    if path is None and not os.environ.get(ENV_LOCK_DIR):
        _private(default_lock_dir().parent)
    folder = Path(os.path.abspath(path or default_lock_dir()))
    _private(folder, parents=True)
    return folder


def _private(folder: Path, parents: bool = False) -> None:
    try:
        problem = private_dir(folder, parents=parents)
    except OSError as e:
        raise EnvironmentFault(f"cannot create the lock folder {folder}: {e.strerror}") from None
    if problem:
        raise EnvironmentFault(f"refusing the lock folder {folder}: it {problem}; remove it, or set "
                               f"{ENV_LOCK_DIR} to a folder only you can write")


def close_all(fds: dict[str, int]) -> None:
    for fd in fds.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()


class Folder:
    """The lock folder as one process sees it: the table mutex, the owner files, the bells."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.thread_lock = threading.Lock()
        self._fds: dict[str, int] = {}  # _MUTEX and the owner files of others, by token
        self._bells: dict[str, int] = {}  # write ends of others' bells, by token
        self._parsed: dict[str, tuple[bytes, list[Entry]]] = {}
        self._generation = -1
        self._tokens: tuple[str, ...] = ()
        try:
            self._fds[_MUTEX] = os.open(path / _MUTEX, os.O_RDWR | os.O_CREAT | OPEN, 0o600)
        except OSError as e:
            raise EnvironmentFault(f"cannot open {path / _MUTEX}: {e.strerror}") from None
        weakref.finalize(self, close_all, self._fds)
        weakref.finalize(self, close_all, self._bells)
        FOLDERS.add(self)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One transaction: every process reads, decides and writes under this lock in turn."""
        with self.thread_lock:
            if not self._fds:
                raise InternalError("lock folder used after close or in a forked child")
            _LOCKER.lock(self._fds[_MUTEX], _EX)
            try:
                yield
            finally:
                _LOCKER.unlock(self._fds[_MUTEX])

    def check_still_there(self) -> None:
        """Somebody deleting the folder under live owners would split the table in two: refuse.

        Checked before every grant decision (one fstat: the mutex file lost its last name).
        """
        if os.fstat(self._fds[_MUTEX]).st_nlink == 0:
            raise EnvironmentFault(f"the lock folder {self.path} was deleted or replaced while novaproc "
                                   "held locks in it; stop the novaproc processes that use it and retry")

    def bump(self) -> None:
        """Say the set of owner files changed, so others list the folder again."""
        os.pwrite(self._fds[_MUTEX], (self._read_generation() + 1).to_bytes(8, "little"), 0)

    def others(self, own: str | None, probe: bool = False) -> list[Entry]:
        """The entries of every owner but `own`; with `probe`, of live owners only."""
        found: list[Entry] = []
        for token in self._list():
            if token == own:
                continue
            entries = self._entries(token)
            if entries is None or (probe and not self.alive(token)):
                self._forget_if_dead(token)
                continue
            found += entries
        return found

    def alive(self, token: str) -> bool:
        """Its owner still holds the kernel lock on its file (a live process; pids prove nothing)."""
        fd = self._fd(token)
        if fd is None:
            return False
        try:
            _LOCKER.lock(fd, _SH_NB)
        except portalocker.AlreadyLocked:
            return True
        return False  # nobody holds it; closing our fd in forget() drops our probe lock

    def forget(self, token: str) -> None:
        """Delete an owner's files: it closed, or it died (nobody can be using them)."""
        for suffix in (".owner", ".bell"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path / f"{token}{suffix}")
        for fds in (self._fds, self._bells):
            fd = fds.pop(token, None)
            if fd is not None:
                os.close(fd)
        self._parsed.pop(token, None)
        self.bump()

    def ring(self, grants: Mapping[str, list[int]]) -> None:
        """Wake owners from select(), telling each which of its waiting tickets may hold now."""
        for token, tickets in grants.items():
            fd = self._bells.get(token)
            if fd is None:
                try:
                    fd = self._bells[token] = os.open(self.path / f"{token}.bell",
                                                      os.O_WRONLY | os.O_NONBLOCK | OPEN)
                except OSError:
                    continue  # no bell, or nobody listens to it: its owner is gone
            try:
                os.write(fd, b"".join(b"%d\n" % t for t in tickets))
            except BlockingIOError:
                pass  # full of rings it has not read yet
            except OSError:
                os.close(self._bells.pop(token))

    def close(self) -> None:
        self.abandon()
        self._parsed.clear()

    def abandon(self) -> None:
        """In a forked child: drop our copies of the descriptors, never the parent's locks."""
        close_all(self._fds)
        close_all(self._bells)

    def _forget_if_dead(self, token: str) -> None:
        if self.alive(token):
            raise EnvironmentFault(f"cannot read {self.path / token}.owner of a live process: another "
                                   f"novaproc version? Let it finish, or set {ENV_LOCK_DIR} apart")
        self.forget(token)

    def _read_generation(self) -> int:
        raw = os.pread(self._fds[_MUTEX], 8, 0)
        return int.from_bytes(raw, "little") if len(raw) == 8 else 0

    def _list(self) -> tuple[str, ...]:
        generation = self._read_generation()
        if generation != self._generation:
            names = os.listdir(self.path)
            self._tokens = tuple(sorted(n[: -len(".owner")] for n in names if n.endswith(".owner")))
            self._generation = generation
            for fds in (self._fds, self._bells):
                for gone in set(fds) - set(self._tokens) - {_MUTEX}:
                    os.close(fds.pop(gone))
            for gone in set(self._parsed) - set(self._tokens):
                del self._parsed[gone]
        return self._tokens

    def _fd(self, token: str) -> int | None:
        if token not in self._fds:
            try:
                self._fds[token] = os.open(self.path / f"{token}.owner", os.O_RDONLY | OPEN)
            except FileNotFoundError:
                return None
        return self._fds[token]

    def _entries(self, token: str) -> list[Entry] | None:
        """What `token`'s owner wrote; None if its file is gone or torn (it died writing)."""
        fd = self._fd(token)
        if fd is None:
            return None
        raw = _read_all(fd)
        cached = self._parsed.get(token)
        if cached is not None and cached[0] == raw:
            return cached[1]
        try:
            entries = decode_entries(raw, token)
        except (ValueError, KeyError, TypeError):
            return None
        self._parsed[token] = (raw, entries)
        return entries


def _read_all(fd: int) -> bytes:
    size = 65536
    raw = os.pread(fd, size, 0)
    while len(raw) == size:
        size *= 4
        raw = os.pread(fd, size, 0)
    return raw




def open_owner_file(path: str) -> int:
    """Create an owner file and hold its kernel lock for as long as the descriptor lives: the
    proof, for every other process, that its owner is alive."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | OPEN, 0o600)
    _LOCKER.lock(fd, _EX_NB)
    return fd


FOLDERS: weakref.WeakSet[Folder] = weakref.WeakSet()


def _abandon_folders_in_child() -> None:
    """A forked child must not keep its parent's locks alive."""
    for folder in list(FOLDERS):
        folder.abandon()


os.register_at_fork(after_in_child=_abandon_folders_in_child)
