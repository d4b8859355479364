"""Run journals: each run's durable folder in the state dir, and what can be read back from it.

    <state_dir>/runs/<id>/run.json        the run's record, replaced atomically (temp, fsync, rename)
                         events.jsonl     version header, then one JSON event per line, append-only
                         logs/<task>.log  each task's output, its attempts appended
The supervisor writes through one Journal; runs.py reads (load_run, list_runs).
A crash at any moment loses nothing that finished: a torn last line is dropped, never guessed.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import EnvironmentFault, InternalError, UsageError
from .fsio import fsync_dir, write_atomic
from .messages import Event, RunState

if TYPE_CHECKING:
    from .runs import RunRecord

JOURNAL_VERSION = 1
RUN_FILE, EVENTS_FILE, LOGS_DIR = "run.json", "events.jsonl", "logs"
DURABLE_KINDS = frozenset({"task_state", "run_started", "run_resumed", "run_finished"})
SYNC_NOW_KINDS = frozenset({"run_started", "run_resumed", "run_finished"})
GROUP_COMMIT = 0.02  # seconds a task event may wait for its fsync
UNRECORDED_KINDS = frozenset({"task_output"})  # output lives in the task's log file
TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class JournalCorrupt(EnvironmentFault):
    """A journal damaged somewhere other than its last line: not a crash, so nothing is guessed."""

    def __init__(self, path: Path, line: int, problem: str) -> None:
        super().__init__(f"{path}: line {line}: {problem}; the journal is damaged (not merely cut "
                         "short by a crash); move its run folder away to ignore it")


@dataclass(frozen=True, slots=True)
class TaskMeta:
    """A task as the run declared it. `env` holds variable names only: values are never recorded."""

    id: str
    description: str = ""
    hash: str = ""
    kind: str = ""
    env: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", tuple(sorted(self.env)))  # a mapping keeps only its names


@dataclass(frozen=True, slots=True)
class RunMeta:
    """What a run is: kept in run.json. `pid_start` is filled in from /proc when left None."""

    tasks_file: str
    root: str
    tasks: tuple[TaskMeta, ...] = ()
    description: str = ""
    argv: tuple[str, ...] = ()
    pid: int = field(default_factory=os.getpid)
    pid_start: int | None = None
    created: float = field(default_factory=time.time)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunMeta:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        tasks = tuple(TaskMeta(**{k: t[k] for k in TaskMeta.__dataclass_fields__ if k in t})
                      for t in fields.pop("tasks", ()))
        argv = tuple(fields.pop("argv", ()))
        return cls(**fields, tasks=tasks, argv=argv)


class Journal:
    """The one writer of a run's folder, held by its supervisor; `record` is thread-safe.

    Every event is written at once, so a killed supervisor loses nothing: the kernel has it.
    Against a machine crash, task events are fsynced by group commit: a flusher thread
    syncs at most GROUP_COMMIT seconds after a task state changed, one fsync for all the
    events of that span (an fsync per event cost 1.5 ms here, more than a trivial task).
    The run's start and end are fsynced before `record` returns.
    """

    def __init__(self, folder: Path, run_id: str, fd: int) -> None:
        self.folder, self.run_id = folder, run_id
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
               new_id: Callable[[], str] = lambda: secrets.token_hex(3)) -> Journal:
        """A new run with a fresh short id; the state dir is created (and kept out of git)."""
        runs = _prepare_state_dir(Path(state_dir))
        run_id, folder = _reserve_folder(runs, new_id)
        if meta.pid_start is None:
            meta = replace(meta, pid_start=process_start_time(meta.pid))
        try:
            (folder / LOGS_DIR).mkdir()
            write_atomic(folder / RUN_FILE, _run_json(run_id, meta))
            fd = _open_events(folder / EVENTS_FILE, os.O_CREAT | os.O_EXCL)
            header = {"novaproc_journal": JOURNAL_VERSION, "run_id": run_id, "created": meta.created}
            _write_all(fd, json.dumps(header).encode() + b"\n")
            os.fsync(fd)
            fsync_dir(folder)
        except (OSError, EnvironmentFault) as e:
            shutil.rmtree(folder, ignore_errors=True)  # a half-made run must not look like a run
            raise EnvironmentFault(f"cannot write the run journal in {folder}: "
                                   f"{getattr(e, 'strerror', None) or e}") from None
        return cls(folder, run_id, fd)

    @classmethod
    def reopen(cls, record: RunRecord, pid: int | None = None, *,
               tasks: Sequence[TaskMeta] | None = None, force: bool = False) -> Journal:
        """Append to an existing run (resume) as supervisor `pid` (default: this process).

        `tasks` re-declares the tasks when the file changed. A run whose supervisor is alive is
        refused unless `force` (a launcher handing its run to a detached child).
        """
        if record.status is RunState.RUNNING and not force:
            raise UsageError(f"run {record.id} is still running (supervisor pid {record.pid}); "
                             f"wait for it or `novaproc cancel {record.id}` first")
        pid = os.getpid() if pid is None else pid
        meta = replace(record.meta, pid=pid, pid_start=process_start_time(pid),
                       tasks=tuple(tasks) if tasks is not None else record.meta.tasks)
        path = record.folder / EVENTS_FILE
        fd = _open_events(path, 0)
        try:
            parsed = parse_events(path)  # read under the lock: nobody appends now
            os.ftruncate(fd, parsed.good_end)
            if parsed.unterminated:
                _write_all(fd, b"\n")
            write_atomic(record.folder / RUN_FILE, _run_json(record.id, meta))
        except BaseException as e:
            os.close(fd)
            if isinstance(e, OSError):
                raise EnvironmentFault(f"cannot reopen the run journal {path}: {e.strerror}") from None
            raise
        journal = cls(record.folder, record.id, fd)
        if parsed.torn:
            journal.note("warning", f"dropped a torn last line ({parsed.torn} bytes) of the journal")
        data: dict[str, Any] = {"pid": pid, "pid_start": meta.pid_start, "previous": str(record.status)}
        if tasks is not None:
            data["tasks"] = [asdict(t) for t in meta.tasks]
        journal.record(Event("run_resumed", record.id, time.time(), data=data))
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
        if event.kind in UNRECORDED_KINDS:
            return
        if event.run_id != self.run_id:
            raise InternalError(f"event of run {event.run_id} recorded in run {self.run_id}")
        line = json.dumps(_scrub_env(event.to_json()), default=str, separators=(",", ":")) + "\n"
        with self._lock:
            if self._fd is None:
                raise InternalError(f"event {event.kind} recorded after run {self.run_id}'s journal closed")
            try:
                _write_all(self._fd, line.encode())
                if event.kind in SYNC_NOW_KINDS:
                    os.fsync(self._fd)
                elif event.kind in DURABLE_KINDS:
                    self._dirty.set()
            except OSError as e:
                raise EnvironmentFault(f"cannot write the run journal {self.folder / EVENTS_FILE}: "
                                       f"{e.strerror}") from None

    def note(self, level: str, text: str) -> None:
        self.record(Event("message", self.run_id, time.time(), data={"level": level, "text": text}))

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


def task_log_path(folder: Path, task_id: str) -> Path:
    if not TASK_ID.fullmatch(task_id):
        raise UsageError(f"{task_id!r} is not a task id")
    return folder / LOGS_DIR / f"{task_id}.log"


def process_start_time(pid: int) -> int | None:
    """When process `pid` started (clock ticks after boot, /proc/<pid>/stat field 22).

    None when there is no such process, or it is a zombie: it will never write again.
    """
    if pid <= 0:
        return None
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        fields = text[text.rindex(")") + 2:].split()  # the name in (...) may hold spaces
        return None if fields[0] in ("Z", "X") else int(fields[19])
    except (OSError, ValueError, IndexError):  # gone, or gone while being read
        return None


def supervisor_alive(meta: RunMeta) -> bool:
    """The recorded supervisor still runs: same pid AND same start time (pids are reused)."""
    start = process_start_time(meta.pid)
    return start is not None and (meta.pid_start is None or start == meta.pid_start)


# --- writing helpers ----------------------------------------------------------------------------

def _prepare_state_dir(state_dir: Path) -> Path:
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        ignore = state_dir / ".gitignore"
        if not ignore.exists():
            write_atomic(ignore, "*\n")
        (state_dir / "runs").mkdir(exist_ok=True)
    except OSError as e:
        # a file in the way is a setting to fix (exit 2); the rest is this machine's state
        fault = UsageError if isinstance(e, (FileExistsError, NotADirectoryError)) else EnvironmentFault
        raise fault(f"cannot create the state dir {state_dir}: {e.strerror}; set another "
                    "with NOVA_STATE_DIR or state_dir in nova.toml") from None
    return state_dir / "runs"


def _reserve_folder(runs: Path, new_id: Callable[[], str]) -> tuple[str, Path]:
    for _ in range(100):
        run_id = new_id()
        try:
            (runs / run_id).mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            raise EnvironmentFault(f"cannot create a run folder in {runs}: {e.strerror}") from None
        return run_id, runs / run_id
    raise EnvironmentFault(f"no free run id in {runs} after 100 tries; remove old runs from it")


def _open_events(path: Path, flags: int) -> int:
    """The event log opened for appending, locked so that one process at a time writes it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | flags, 0o644)
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


def _run_json(run_id: str, meta: RunMeta) -> str:
    return json.dumps({"novaproc_journal": JOURNAL_VERSION, "id": run_id, **asdict(meta)}, indent=1)


def _scrub_env(value: Any) -> Any:
    """`value` with every "env" mapping replaced by its names: secrets stay out of the journal."""
    if isinstance(value, dict):
        return {k: (sorted(v) if k == "env" and isinstance(v, dict) else _scrub_env(v))
                if isinstance(v, _NESTED) else v for k, v in value.items()}
    if isinstance(value, _NESTED):
        return [_scrub_env(v) if isinstance(v, _NESTED) else v for v in value]
    return value


_NESTED = (dict, list, tuple)  # only these can hide an "env" table: scalars are taken as they are


# --- reading ------------------------------------------------------------------------------------

class Parsed(NamedTuple):
    events: list[tuple[int, dict[str, Any]]]  # (line number, event), header excluded
    good_end: int  # bytes up to the end of the last whole line
    unterminated: bool  # the last whole line lacks its newline
    torn: int  # bytes of a torn last line, dropped


def parse_events(path: Path) -> Parsed:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Parsed([], 0, False, 0)
    except OSError as e:
        raise EnvironmentFault(f"cannot read {path}: {e.strerror}") from None
    lines = raw.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    events = [(n, _parse_line(path, n, line)) for n, line in enumerate(lines, 1)]
    good_end, unterminated, torn = len(raw) - len(tail), False, 0
    if tail:
        try:
            events.append((len(lines) + 1, _parse_line(path, len(lines) + 1, tail)))
            good_end, unterminated = len(raw), True
        except JournalCorrupt:
            torn = len(tail)
    if events:
        _check_header(path, events.pop(0)[1])
    return Parsed(events, good_end, unterminated, torn)


def _parse_line(path: Path, number: int, line: bytes) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise JournalCorrupt(path, number, f"not JSON ({e})") from None
    if not isinstance(value, dict) or not (number == 1 or isinstance(value.get("event"), str)):
        raise JournalCorrupt(path, number, "not a journal event")
    return value


def _check_header(path: Path, header: dict[str, Any]) -> None:
    version = header.get("novaproc_journal")
    if not isinstance(version, int):
        raise JournalCorrupt(path, 1, "no journal header")
    if version > JOURNAL_VERSION:
        raise EnvironmentFault(f"{path}: journal version {version} was written by a newer novaproc "
                               f"(this one reads version {JOURNAL_VERSION}); upgrade novaproc")


