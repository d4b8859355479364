"""A task's log as its worker writes it. A task that prints nothing leaves no file, and costs
no file either: its output goes to a scratch file of the worker's, reused from task to task
while it stays empty, and given the task's log name once something is in it.

    job ──▶ the log exists (an earlier attempt's)? append to it, headed
        └─▶ else the worker's scratch file (logs/.<worker pid>.scratch), empty
              ├─ the task runs on (Started): linked to its log's name, to be followed live
              └─ the task ended: output → renamed to its log's name; none → kept for the next

Creating and removing one empty file a task cost a quiet task about 55 µs of the worker's and
the supervisor's time, and a write to the disk's metadata each.
"""

from __future__ import annotations

import contextlib
import os
import time

from novaproc.fsio import open_private


class TaskLog:
    """Where one attempt's output goes; `fileno()` for the task, `write()` for novaproc's own
    lines. `name()` makes it visible at its path; `close()` after the task and its leftovers."""

    _scratch: dict[str, int] = {}  # folder -> this process's empty scratch file there (one at most)
    current: TaskLog | None = None  # the log of the attempt under way, for a worker that must die

    def __init__(self, path: str, attempt: int, task_id: str) -> None:
        self.path, self.folder = path, os.path.dirname(path)
        self.named = True
        try:  # an earlier attempt's output: this one's goes after it, headed
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except FileNotFoundError:
            self.fd, self.named = self._take_scratch(), False
        else:
            if os.fstat(self.fd).st_size:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                self.write(f"\n=== novaproc: attempt {attempt} of {task_id}, {stamp} ===\n".encode())
        TaskLog.current = self

    def fileno(self) -> int:
        return self.fd

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def name(self) -> None:
        """Give the output its log's name now (the task runs a while: it can be followed)."""
        if not self.named:
            with contextlib.suppress(OSError):
                os.link(scratch_path(self.folder, os.getpid()), self.path)
                self.named = True
                self._drop_scratch_name()

    def close(self) -> None:
        """The task and what it left are gone: its output keeps its log's name, or takes it; a
        log that stayed empty goes (a task that printed nothing has none)."""
        size = os.fstat(self.fd).st_size
        if not self.named and not size:
            TaskLog.current = None
            return  # the scratch file, empty, serves the next task
        if not self.named:
            with contextlib.suppress(OSError):
                os.rename(scratch_path(self.folder, os.getpid()), self.path)
            self._scratch.pop(self.folder, None)
        elif not size:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        # only now: a worker told to die meanwhile closes it again, rather than drop its output
        TaskLog.current = None
        os.close(self.fd)

    def _take_scratch(self) -> int:
        fd = self._scratch.get(self.folder)
        if fd is None:
            _drop_scratches()  # one at a time: a worker on a cluster gets a new folder a job
            fd = self._scratch[self.folder] = open_private(scratch_path(self.folder, os.getpid()))
        return fd

    def _drop_scratch_name(self) -> None:
        """The scratch file became the log: the next task gets a new one."""
        with contextlib.suppress(OSError):
            os.unlink(scratch_path(self.folder, os.getpid()))
        self._scratch.pop(self.folder, None)

    @classmethod
    def drop_scratch(cls) -> None:
        """A worker's end: its scratch files go (each is empty: a task's output was named)."""
        if cls.current is not None:
            cls.current.close()
        _drop_scratches()


def _drop_scratches() -> None:
    for folder, fd in list(TaskLog._scratch.items()):
        with contextlib.suppress(OSError):
            os.unlink(scratch_path(folder, os.getpid()))
        os.close(fd)
    TaskLog._scratch.clear()


def scratch_path(folder: str, pid: int) -> str:
    """The scratch file of worker `pid` in a run's log folder (a dot name: never a task's)."""
    return os.path.join(folder, f".{pid}.scratch")


def rescue(log_path: str, worker_pid: int) -> None:
    """After worker `worker_pid` died mid-task: what its task printed into the scratch file
    becomes the task's log (appended to an earlier attempt's); the scratch file goes."""
    scratch = scratch_path(os.path.dirname(log_path), worker_pid)
    try:
        with open(scratch, "rb") as f:
            data = f.read()
    except OSError:
        return
    if data:
        with contextlib.suppress(OSError):
            fd = open_private(log_path)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(scratch)
