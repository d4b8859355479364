"""A worker process: runs one task at a time for the supervisor, and never lets an exception
escape (every job is answered with a Finished record).

    supervisor ── Job ──▶ worker ── spawn, own session ──▶ task (cmd), or fork ──▶ child (call)
               ◀─ Started (a task still running after STARTED_AFTER), Finished ─┘

The worker is a child subreaper (proctree.py), so whatever its task leaves behind (even a daemon
that called setsid) stays below it and can be found and killed. It sees the supervisor die as EOF on its
pipe, even mid-task, and then kills its tree and exits: nothing outlives novaproc. It imports
little, so the forkserver that forks workers stays light.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import multiprocessing
import multiprocessing.connection
import os
import select
import shutil
import signal
import sys
import time
import traceback
from typing import Any

from novaproc.execution.proctree import (
    DEFAULT_GRACE,
    become_subreaper,
    keep_to_ourselves,
    kill_tree,
    reap,
    reap_leftovers,
    spawn,
)
from novaproc.execution.tasklog import TaskLog
from novaproc.messages import Finished, Job, Started

# A task that ends sooner is reported by its Finished alone: one message, one wake-up of the
# supervisor per short task instead of two. Longer ones report their pid (for the journal).
STARTED_AFTER = 0.1


def worker_main(conn: multiprocessing.connection.Connection) -> None:
    """Serve jobs until the pipe closes. Never lets an exception escape: every job is
    answered with a Finished record."""
    os.setsid()
    become_subreaper()
    keep_to_ourselves()
    # no SIG_IGN here: an ignored signal stays ignored across exec, in every task. The own
    # session already keeps a terminal's Ctrl-C away; the supervisor decides what to stop.
    signal.signal(signal.SIGTERM, _die_with_tree)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            break
        if job is None:
            break
        _Worker.grace = job.kill_grace
        try:
            result = _run_job(job, conn)
        except BaseException as e:  # report, never escape
            result = Finished(job.task_id, job.attempt, None, error=f"novaproc could not run it: {e!r}")
        try:
            conn.send(result)
        except OSError:  # the supervisor is gone: nobody to tell, and nothing to print
            break
    reap_leftovers(_Worker.grace)  # cheap when the last task left nothing behind, the usual case
    TaskLog.drop_scratch()


def guard_command(argv: list[str], watch: multiprocessing.connection.Connection, grace: float) -> int:
    """Run `argv` below this process as a task runs below a worker (own session, no input,
    our output), and end its whole tree if `watch` closes: the supervisor died. Its exit
    code, shell style. For the run's own commands (verify, worktree_setup), see guard.py."""
    become_subreaper()
    _Worker.grace = grace
    signal.signal(signal.SIGTERM, _die_with_tree)  # a timeout: the tree goes with us
    program = argv[0] if "/" in argv[0] else shutil.which(argv[0]) or argv[0]
    try:
        pid = spawn(program, argv, os.environ, None)
    except OSError as e:
        os.write(2, f"novaproc: cannot start {argv[0]}: {e.strerror}\n".encode())
        return 127 if isinstance(e, FileNotFoundError) else 126
    _wait_child_or_orphaned(pid, watch, None)
    code, sig = reap(pid)
    reap_leftovers(_Worker.grace)
    return code if code is not None else 128 + (sig or 0)


class _Worker:
    grace = DEFAULT_GRACE
    env: dict[str, str] | None = None  # os.environ copied once: it never changes in a worker
    programs: dict[tuple[str, str | None], str] = {}  # (name, PATH) -> where it was found


def _program(name: str, path: str | None) -> str:
    """Where `name` is in `path` (the task's PATH, which posix_spawnp would ignore for the
    worker's); "" if nowhere. Found ones are remembered, as a shell's hash table does: a lookup
    stats each folder of PATH, a tenth of the cost of running `true`."""
    if "/" in name:
        return name
    found = _Worker.programs.get((name, path))
    if found is None:
        found = shutil.which(name, path=path) or ""
        if found:
            _Worker.programs[(name, path)] = found
    return found


def _worker_env() -> dict[str, str]:
    if _Worker.env is None:
        _Worker.env = dict(os.environ)
    return _Worker.env


def _die_with_tree(signum: int, frame: object) -> None:
    kill_tree(os.getpid(), _Worker.grace)
    with contextlib.suppress(Exception):  # a signal may come mid-way through the log's own steps
        TaskLog.drop_scratch()  # the task's output so far keeps its log's name
    os._exit(128 + signum)


def _run_job(job: Job, conn: multiprocessing.connection.Connection) -> Finished:
    started = time.time()
    log = TaskLog(job.log_path, job.attempt, job.task_id)
    try:
        if job.call is not None:
            pid, code, sig, error, value = _run_call(job, log, conn, started)
        else:
            pid, code, sig, error = _run_command(job, log, conn, started)
            value = None
        if pid:
            reap_leftovers(_Worker.grace)
    finally:
        log.close()  # after the leftovers: nothing writes to it any more
    return Finished(job.task_id, job.attempt, code, sig, error, value, started, time.time())


def _task_env(job: Job) -> dict[str, str]:
    env = {**_worker_env(), **job.env}
    env["NOVA_TASK_ID"], env["NOVA_ATTEMPT"] = job.task_id, str(job.attempt)
    return env


def _run_command(job: Job, log: TaskLog, conn: multiprocessing.connection.Connection,
                 started: float) -> tuple[int, int | None, int | None, str | None]:
    """Spawn the command in its own session, output to the log, and wait for it.

    posix_spawn, not subprocess.Popen: half the cost per task (0.7 ms against 1.25 ms for
    `true` here), which is most of novaproc's overhead on short tasks.
    """
    env = _task_env(job)
    try:
        os.chdir(job.cwd)  # the worker is single-threaded: the child inherits the folder
    except OSError as e:
        log.write(f"novaproc: working folder {job.cwd}: {e.strerror}\n".encode())
        return 0, 126, None, f"working folder not found: {job.cwd}"
    if job.shell is not None:
        program, argv = "/bin/sh", ["/bin/sh", "-c", job.shell]
    else:
        argv = list(job.argv or ())
        program = _program(argv[0], env.get("PATH"))
        if not program:
            log.write(f"novaproc: {argv[0]}: program not found\n".encode())
            return 0, 127, None, f"program not found: {argv[0]}"
    try:
        pid = spawn(program, argv, env, log.fileno())
    except FileNotFoundError:
        _Worker.programs = {}  # one that was found has gone: look again next time
        log.write(f"novaproc: {program}: program not found\n".encode())
        return 0, 127, None, f"program not found: {program}"
    except OSError as e:
        log.write(f"novaproc: cannot start {program}: {e.strerror}\n".encode())
        return 0, 126, None, f"cannot start {program}: {e.strerror or e}"
    _wait_child_or_orphaned(pid, conn, Started(job.task_id, job.attempt, pid, started), log=log)
    code, sig = reap(pid)
    return pid, code, sig, None


def _wait_child_or_orphaned(pid: int, conn: multiprocessing.connection.Connection,
                            started: Started | None, output: int | None = None,
                            log: TaskLog | None = None) -> bytes:
    """Block until the task process `pid` exits, collecting what it writes to `output` (read
    as it comes, so a big result cannot block the writer); send `started` if it is still
    running after STARTED_AFTER, and give its `log` its name then. If the supervisor dies
    first (its end of the pipe closes), end the task's whole tree and this worker: nothing
    outlives novaproc."""
    pidfd = os.pidfd_open(pid)
    chunks: list[bytes] = []
    poller = select.poll()  # not connection.wait: it builds a selector a call, and this runs a task
    for fd in (pidfd, conn.fileno(), output):
        if fd is not None:
            poller.register(fd, select.POLLIN)
    announce_at = time.monotonic() + STARTED_AFTER
    try:
        while True:
            timeout = None if started is None else max(0, math.ceil((announce_at - time.monotonic()) * 1000))
            ready = {fd for fd, _ in poller.poll(timeout)}
            if output in ready and not _read_into(output, chunks):
                poller.unregister(output)
                output = None
            if pidfd in ready:
                break
            if conn.fileno() in ready:  # EOF: the supervisor died; or its shutdown: stop, tree and all
                _die_with_tree(signal.SIGTERM, None)
            if started is not None and time.monotonic() >= announce_at:
                if log is not None:
                    log.name()
                try:
                    conn.send(started)
                except OSError:  # the supervisor died just now
                    _die_with_tree(signal.SIGTERM, None)
                started = None
    finally:
        os.close(pidfd)
    if output is not None:
        os.set_blocking(output, False)
        with contextlib.suppress(BlockingIOError):
            while _read_into(output, chunks):
                pass
    return b"".join(chunks)


def _read_into(fd: int, chunks: list[bytes]) -> bool:
    """Read what `fd` has into `chunks`; False at end of file."""
    data = os.read(fd, 65536)
    chunks.append(data)
    return bool(data)


def _run_call(job: Job, log: TaskLog, conn: multiprocessing.connection.Connection,
              started: float) -> tuple[int, int | None, int | None, str | None, Any]:
    """Fork a child to call the function: a crash or a stray import stays in the child."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        os._exit(_call_in_child(job, log.fileno(), write_fd))
    os.close(write_fd)
    try:
        payload = _wait_child_or_orphaned(pid, conn, Started(job.task_id, job.attempt, pid, started),
                                          read_fd, log)
    finally:
        os.close(read_fd)
    code, sig = reap(pid)
    report = json.loads(payload) if payload else {}
    error = report.get("error")
    if sig is not None and error is None:
        error = f"the call died by signal {signal.Signals(sig).name}"
    elif code not in (0, 1, None) and error is None:
        error = f"the call exited the process with code {code}"
    return pid, code, sig, error, report.get("value")


def _call_in_child(job: Job, log_fd: int, result_fd: int) -> int:
    os.setpgid(0, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    report: dict[str, Any] = {}
    code = 0
    try:
        os.chdir(job.cwd)
        sys.path.insert(0, job.cwd)
        os.environ.update(_task_env(job))
        module_name, _, func_name = job.call.partition(":")  # type: ignore[union-attr]
        target: Any = importlib.import_module(module_name)
        for part in func_name.split("."):
            target = getattr(target, part)
        report["value"] = _jsonable(target(*job.args, **job.kwargs))
    except SystemExit as e:  # sys.exit(n) in a call means exit code n, as in a script
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if code:
            report["error"] = f"SystemExit: {e.code}"
    except BaseException as e:
        traceback.print_exc()
        report["error"] = f"{type(e).__name__}: {e}"
        code = 1
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(result_fd, json.dumps(report).encode())
    return code


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return {"repr": repr(value)}
