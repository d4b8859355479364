"""The run journal's one writer: a run's durable folder in the state dir (its layout and
parsing are journal_format.py's; runs.py reads it back).

A crash at any moment loses nothing that finished: every event is written at once, run.json
is replaced atomically, and a resume cuts a torn last line before it appends.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from novaproc.errors import EnvironmentFault, InternalError, UsageError
from novaproc.fsio import fsync_dir, private_dir, write_atomic
from novaproc.messages import Event, EventKind, Level, Message, RunResumed, RunState, TaskChanged
from novaproc.state import index
from novaproc.state.format import (
    EVENTS_FILE,
    JOURNAL_VERSION,
    LOGS_DIR,
    RUN_FILE,
    RunMeta,
    TaskMeta,
    parse_events,
    process_start_time,
    run_json,
    task_json,
    task_log_path,
)
from novaproc.state.replay import Replay
from novaproc.state.summary import drop_summary, write_summary

# on disk before `record` returns: a landing is journaled before the user's checkout is touched
SYNC_NOW_KINDS = frozenset({EventKind.RUN_STARTED, EventKind.RUN_RESUMED, EventKind.LANDING,
                            EventKind.RUN_FINISHED})
DURABLE_KINDS = SYNC_NOW_KINDS | {EventKind.TASK_STATE}
GROUP_COMMIT = 0.02  # seconds a task event may wait for its fsync


class Journal:
    """The one writer of a run's folder, held by its supervisor; `record` is thread-safe.

    Every event is written at once, so a killed supervisor loses nothing: the kernel has it.
    Against a machine crash, task events are fsynced by group commit: a flusher thread
    syncs at most GROUP_COMMIT seconds after a task state changed, one fsync for all the
    events of that span (an fsync per event cost 1.5 ms here, more than a trivial task).
    The run's start and end are fsynced before `record` returns.
    """

    def __init__(self, folder: Path, run_id: str, fd: int, meta: RunMeta, fold: Replay | None) -> None:
        # the declared tasks are in run.json and the fold: not kept a third time (100,000 of them)
        self.folder, self.run_id, self.meta = folder, run_id, replace(meta, tasks=())
        # what status will show, folded as the events are written: their summary at the end
        # (None: an event could not be folded, so no summary; readers replay the journal)
        self._fold = fold
        self._logs: dict[str, Path] = {}
        self._fd: int | None = fd
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._closing = threading.Event()  # set by close(): ends the flusher's wait at once
        self._flusher = threading.Thread(target=self._flush_loop, name="novaproc-journal", daemon=True)
        self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._closing.is_set():  # checked before each wait: close() may have set _dirty already
            self._dirty.wait()
            self._closing.wait(GROUP_COMMIT)  # let the events of this span share one fsync
            self._dirty.clear()
            with self._lock:
                if self._fd is None:
                    return
                fd = os.dup(self._fd)  # fsync outside the lock: writers go on meanwhile
            try:
                os.fsync(fd)
            except OSError:
                pass  # the next write or close reports a broken disk
            finally:
                os.close(fd)

    @classmethod
    def create(cls, state_dir: Path, meta: RunMeta, *,
               new_id: Callable[[], str] = lambda: os.urandom(3).hex()) -> Journal:
        """A new run with a fresh short id; the state dir is created (and kept out of git)."""
        runs = state_folder(Path(state_dir))
        run_id, folder = _reserve_folder(runs, new_id)
        if meta.pid_start is None:
            meta = replace(meta, pid_start=process_start_time(meta.pid))
        try:
            (folder / LOGS_DIR).mkdir(mode=0o700)
            write_atomic(folder / RUN_FILE, run_json(run_id, meta), mode=0o600)
            fd = _open_events(folder / EVENTS_FILE, os.O_CREAT | os.O_EXCL)
            header = {"novaproc_journal": JOURNAL_VERSION, "run_id": run_id, "created": meta.created}
            _write_all(fd, json.dumps(header).encode() + b"\n")
            os.fsync(fd)
            fsync_dir(folder)
        except (OSError, EnvironmentFault) as e:
            shutil.rmtree(folder, ignore_errors=True)  # a half-made run must not look like a run
            raise EnvironmentFault(f"cannot write the run journal in {folder}: "
                                   f"{getattr(e, 'strerror', None) or e}") from None
        return cls(folder, run_id, fd, meta, Replay(meta))

    @classmethod
    def reopen(cls, folder: Path, meta: RunMeta, previous: RunState, *,
               tasks: Sequence[TaskMeta] | None = None) -> Journal:
        """Append to the run in `folder` (resume), as this process; `meta` is its run.json and
        `previous` how it ended. `tasks` re-declares the tasks when the file changed."""
        run_id = folder.name
        if previous is RunState.RUNNING:
            raise UsageError(f"run {run_id} is still running (supervisor pid {meta.pid}); "
                             f"wait for it or `novaproc cancel {run_id}` first")
        pid = os.getpid()
        meta = replace(meta, pid=pid, pid_start=process_start_time(pid),
                       tasks=tuple(tasks) if tasks is not None else meta.tasks)
        path = folder / EVENTS_FILE
        fd = _open_events(path, 0)
        try:
            drop_summary(folder)
            parsed = parse_events(path)  # read under the lock: nobody appends now
            os.ftruncate(fd, parsed.good_end)
            if parsed.unterminated:
                _write_all(fd, b"\n")
            write_atomic(folder / RUN_FILE, run_json(run_id, meta), mode=0o600)
        except BaseException as e:
            os.close(fd)
            if isinstance(e, OSError):
                raise EnvironmentFault(f"cannot reopen the run journal {path}: {e.strerror}") from None
            raise
        journal = cls(folder, run_id, fd, meta, _folded(meta, parsed.events))
        if parsed.torn:
            journal.note(Level.WARNING, f"dropped a torn last line ({parsed.torn} bytes) of the journal")
        declared = tuple(task_json(t) for t in meta.tasks) if tasks is not None else None
        journal.record(Event(run_id, time.time(), RunResumed(pid, meta.pid_start, str(previous), declared)))
        return journal

    @property
    def state_dir(self) -> Path:
        return self.folder.parent.parent

    def log_path(self, task_id: str) -> Path:
        """Where `task_id`'s output goes (its attempts appended, the worker heads each later one)."""
        path = self._logs.get(task_id)
        if path is None:
            path = self._logs[task_id] = task_log_path(self.folder, task_id)
        return path

    def record(self, event: Event) -> None:
        """Append `event` as one line; a state change is fsynced within GROUP_COMMIT seconds.
        Raises EnvironmentFault."""
        self.record_all([event])

    def record_all(self, events: Sequence[Event]) -> None:
        """Append `events` in one write (the supervisor's news of one step: a task ended,
        another started); as `record` each."""
        lines = []
        for event in events:
            if event.run_id != self.run_id:
                raise InternalError(f"event of run {event.run_id} recorded in run {self.run_id}")
            data = _scrub_env(event.to_json())
            lines.append((json.dumps(data, default=str, separators=(",", ":")) + "\n", data))
        kinds = {event.kind for event in events}
        with self._lock:
            if self._fd is None:
                raise InternalError(f"events recorded after run {self.run_id}'s journal closed")
            try:
                _write_all(self._fd, "".join(line for line, _ in lines).encode())
                if kinds & SYNC_NOW_KINDS:
                    os.fsync(self._fd)
                elif kinds & DURABLE_KINDS:
                    self._dirty.set()
            except OSError as e:
                raise EnvironmentFault(f"cannot write the run journal {self.folder / EVENTS_FILE}: "
                                       f"{e.strerror}") from None
            for event, (line, data) in zip(events, lines, strict=True):
                self._fold_in(line, data, event.kind)
        for event in events:
            if isinstance(event.payload, TaskChanged) and event.payload.state.finished and event.task_id:
                self._drop_if_empty(event.task_id)

    def _fold_in(self, line: str, data: dict[str, Any], kind: EventKind) -> None:
        """Fold the event just written (as a reader will read it back) into the summary's state;
        write the summary when it ends the run. A task's change holds only JSON's own types (a
        call's value was made JSON by the worker), so it is folded as it is, unparsed: that is
        most events, and parsing each line again cost a third of `record`."""
        if self._fold is None:
            return
        try:
            self._fold.apply(data if kind == EventKind.TASK_STATE else json.loads(line))
        except (KeyError, ValueError, TypeError):
            self._fold = None  # no summary: status replays the events, and says what is wrong
            return
        if kind == EventKind.RUN_FINISHED:
            write_summary(self.folder, self.meta, self._fold)
            # written: a later event (a note) makes the summary stale anyway, and the fold of
            # 100,000 tasks is tens of MB the run's last steps can use
            self._fold = None

    def _drop_if_empty(self, task_id: str) -> None:
        """A task that printed nothing leaves no log: a run of 100,000 quiet tasks would
        otherwise fill its folder with empty files. Readers take a missing log as no output."""
        path = self.log_path(task_id)
        with contextlib.suppress(OSError):
            if path.stat().st_size == 0:
                path.unlink()
        self._logs.pop(task_id, None)

    def note(self, level: Level, text: str) -> None:
        self.record(Event(self.run_id, time.time(), Message(level, text)))

    def close(self) -> None:
        self._closing.set()
        self._dirty.set()
        if self._flusher.is_alive() and self._flusher is not threading.current_thread():
            self._flusher.join()
        with self._lock:
            if self._fd is not None:
                fd, self._fd = self._fd, None
                os.fsync(fd)
                os.close(fd)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- writing helpers ----------------------------------------------------------------------------

def _folded(meta: RunMeta, events: Sequence[tuple[int, dict[str, Any]]]) -> Replay | None:
    """The fold of a resumed run's events so far; None when one is unreadable (no summary)."""
    fold = Replay(meta)
    try:
        for _, ev in events:
            fold.apply(ev)
    except (KeyError, ValueError, TypeError):
        return None
    return fold


def state_folder(state_dir: Path, name: str = "runs") -> Path:
    """A folder of the state dir (its runs, the tasks `each` writes), both made 0700 when
    missing. Refused (exit 2: a setting to fix) when either is a symlink, another user's or
    writable by others: journals and task output are the user's alone, and nobody may plant a
    run in them."""
    try:
        for folder in (state_dir, state_dir / name):
            if problem := private_dir(folder, parents=True):
                raise UsageError(f"cannot use the state dir {state_dir}: {folder} {problem}; fix it, or "
                                 "set another with NOVA_STATE_DIR or state_dir in nova.toml")
        ignore = state_dir / ".gitignore"
        if not ignore.exists():
            write_atomic(ignore, "*\n")
    except OSError as e:
        # a file in the way is a setting to fix (exit 2); the rest is this machine's state
        fault = UsageError if isinstance(e, (FileExistsError, NotADirectoryError)) else EnvironmentFault
        raise fault(f"cannot create the state dir {state_dir}: {e.strerror}; set another "
                    "with NOVA_STATE_DIR or state_dir in nova.toml") from None
    return state_dir / name


def _reserve_folder(runs: Path, new_id: Callable[[], str]) -> tuple[str, Path]:
    for _ in range(100):
        run_id = new_id()
        try:
            (runs / run_id).mkdir(mode=0o700)
        except FileExistsError:
            continue
        except OSError as e:
            raise EnvironmentFault(f"cannot create a run folder in {runs}: {e.strerror}") from None
        if not index.register(run_id, runs / run_id):  # the user has a run of that id elsewhere
            (runs / run_id).rmdir()
            continue
        return run_id, runs / run_id
    raise EnvironmentFault(f"no free run id in {runs} after 100 tries; remove old runs from it")


def _open_events(path: Path, flags: int) -> int:
    """The event log opened for appending, locked so that one process at a time writes it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | flags, 0o600)
    except OSError as e:
        raise EnvironmentFault(f"cannot open the run journal {path}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(f"{path} is being written by another novaproc process") from None
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _scrub_env(value: Any) -> Any:
    """`value` with every "env" mapping replaced by its names: secrets stay out of the journal."""
    if isinstance(value, dict):
        return {k: (sorted(v) if k == "env" and isinstance(v, dict) else _scrub_env(v))
                if isinstance(v, _NESTED) else v for k, v in value.items()}
    if isinstance(value, _NESTED):
        return [_scrub_env(v) if isinstance(v, _NESTED) else v for v in value]
    return value


_NESTED = (dict, list, tuple)  # only these can hide an "env" table: scalars are taken as they are


