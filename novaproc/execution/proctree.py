"""Process trees: start a task's process in its own session, reap it, and end a whole tree.

A worker (and the guardian of verify and worktree_setup) is a child subreaper, so whatever
its task leaves behind, even a daemon that called setsid, stays below it and can be found.
Ending a tree escalates: SIGTERM to every descendant, a grace period, then SIGKILL to those
still alive. psutil is imported here, and only when a tree must be walked.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Collection
from typing import Any

PR_SET_CHILD_SUBREAPER = 36
DEFAULT_GRACE = 5.0  # seconds from SIGTERM to SIGKILL, when the run's kill_grace is not known
# Python ignores SIGPIPE and SIGXFSZ for itself; a task starts with the defaults, as from a shell
DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


def become_subreaper() -> None:
    """Orphans among our descendants are reparented to us, not to init: none escapes."""
    import ctypes  # here, not at the top: the supervisor imports this module but never calls it

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def keep_to_ourselves() -> None:
    """Every descriptor above stderr close-on-exec: what the forkserver left open (its pipes, its
    listening socket) must not reach a task, where an orphan would hold it open for ever."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):
                os.set_inheritable(fd, False)


def spawn(program: str, argv: list[str], env: dict[str, str] | os._Environ[str],
          output: int | None) -> int:
    """Start `program` in its own session with no input, its output to `output` (None: ours);
    its pid. Raises OSError (FileNotFoundError when there is no such program)."""
    return os.posix_spawn(program, argv, env, setsid=True, setsigdef=DEFAULT_SIGNALS,
                          file_actions=_stdio(output))


def _stdio(log_fd: int | None) -> list[tuple[Any, ...]]:
    devnull_in = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
    if log_fd is None:
        return devnull_in
    return [*devnull_in, (os.POSIX_SPAWN_DUP2, log_fd, 1), (os.POSIX_SPAWN_DUP2, log_fd, 2)]


def reap(pid: int) -> tuple[int | None, int | None]:
    """(exit code, None) or (None, signal) of the ended child `pid`."""
    status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return (status, None) if status >= 0 else (None, -status)


def reap_leftovers(grace: float) -> None:
    """After a task ends, end whatever it left running: a finished task owns nothing."""
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return  # no children at all: the common, cheap case
    kill_tree(os.getpid(), grace)


def kill_tree(root: int, grace: float) -> int:
    """SIGTERM every descendant of `root`, SIGKILL those alive after `grace`, reap them; how
    many needed the SIGKILL."""
    import psutil

    try:
        procs = psutil.Process(root).children(recursive=True)
    except psutil.Error:
        return 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=1)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    return len(alive)


def signal_tree(root: int, group: int | None, sig: int) -> None:
    """Send `sig` to process group `group` (a task's session) and to every descendant of `root`
    (its worker), wherever they moved."""
    import psutil

    try:
        procs = psutil.Process(root).children(recursive=True)
    except psutil.Error:
        procs = []
    if group:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.send_signal(sig)


def kill_adopted(keep: Collection[int] = ()) -> int:
    """SIGKILL every child of this process (a subreaper) that is not one of multiprocessing's
    helpers (the forkserver, the resource tracker) nor in `keep` (workers forked here): orphans
    adopted from a killed worker, and all below them. Call only while this process runs no
    child of its own (git, a guardian)."""
    helpers = {_helper_pid("forkserver", "_forkserver", "_forkserver_pid"),
               _helper_pid("resource_tracker", "_resource_tracker", "_pid"), *keep}
    if not _children() - helpers:
        return 0  # the usual case, without psutil's import
    import psutil

    try:
        adopted = [p for p in psutil.Process().children() if p.pid not in helpers]
    except psutil.Error:
        return 0
    for p in adopted:
        kill_tree(p.pid, 0)
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(adopted, timeout=1)
    return len(adopted)


def _children() -> set[int]:
    """Our children's pids, from /proc (every thread's list); all pids, so "maybe some", when
    this kernel does not keep the lists."""
    found: set[int] = set()
    try:
        for task in os.scandir(f"/proc/{os.getpid()}/task"):
            with open(f"{task.path}/children") as f:
                found.update(int(pid) for pid in f.read().split())
    except OSError:
        return {-1}
    return found


def _helper_pid(module: str, instance: str, attribute: str) -> int | None:
    import importlib

    try:
        return getattr(getattr(importlib.import_module(f"multiprocessing.{module}"), instance), attribute)
    except AttributeError:
        return None


def kill_marked(name: str, value: str) -> int:
    """SIGKILL every process whose environment has `name`=`value`, and wait for them to die (so
    what they leave is orphaned by the time this returns). What a task starts inherits its marks
    (NOVA_JOB for one attempt, NOVA_RUN_ID for a run), wherever it was reparented: this finds
    them when the tree is lost, as when a worker or a supervisor was killed outright."""
    import psutil

    killed = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get(name) == value:
                proc.kill()
                killed.append(proc)
        except psutil.Error:
            continue
    psutil.wait_procs(killed, timeout=1)
    return len(killed)
