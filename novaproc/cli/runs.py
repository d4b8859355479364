"""The commands that read run journals: `status` (alias `ps`), `logs`, `wait` and `cancel`.

They read a run's folder and never write it: the supervisor does. `cancel` only signals the
supervisor, after checking it is still the process the journal names (pid and start time).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from novaproc.cli.text import format_duration, plain_text
from novaproc.errors import EnvironmentFault, ExitCode, InternalError
from novaproc.inputs.paths import find_root
from novaproc.messages import RunState, TaskState

POLL_SECONDS = 0.2
CANCEL_TIMEOUT = 60.0

if TYPE_CHECKING:  # the commands import the journal readers when they run: --help stays fast
    from novaproc.state.reader import RecordedTask, RunRecord


def add_parsers(sub: Any) -> None:
    """Add status/ps, logs, wait and cancel to the `sub` subparsers of the main parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=Path, metavar="DIR",
                        help="where runs are kept (default: NOVA_STATE_DIR, nova.toml, or .nova "
                        "at the repository root)")
    p = sub.add_parser("status", aliases=["ps"], parents=[common], help="list runs, or show one",
                       description="List this repository's runs (or with --all the user's runs "
                       "everywhere), newest first, or show one run in detail: each task's state, "
                       "attempts, duration and exit code. A run id works from any folder.")
    p.add_argument("run", nargs="?", metavar="RUN", help="a run id (or a unique prefix)")
    p.add_argument("--all", action="store_true", help="every run of yours, whatever its repository")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("logs", parents=[common], help="show a run's task output",
                       description="Print a task's output; without TASK, every task's, each "
                       "under a header. TASK `verify` and `setup` (unless a task has that id) "
                       "print the output of verify and of worktree_setup.")
    p.add_argument("run", metavar="RUN")
    p.add_argument("task", nargs="?", metavar="TASK")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    p.set_defaults(handler=cmd_logs)

    p = sub.add_parser("wait", parents=[common], help="wait for a run; exit with its exit code",
                       description="Block until the run ends, then exit with its exit code "
                       "(1 for a crashed run).")
    p.add_argument("run", metavar="RUN")
    p.set_defaults(handler=cmd_wait)

    p = sub.add_parser("cancel", parents=[common], help="stop a run gracefully",
                       description="Ask a run's supervisor to stop (SIGTERM): its tasks are "
                       "terminated, locks released, the journal kept. Waits until it has stopped.")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--timeout", type=float, default=CANCEL_TIMEOUT, metavar="S",
                   help=f"give up waiting after S seconds (default {CANCEL_TIMEOUT:g})")
    p.set_defaults(handler=cmd_cancel)


def state_dir(args: argparse.Namespace) -> Path:
    """The state dir: --state-dir, else NOVA_STATE_DIR, nova.toml, or .nova at the git root."""
    from novaproc.inputs.settings import load_settings

    root, _ = find_root(Path.cwd())
    flags = {"state_dir": str(args.state_dir)} if getattr(args, "state_dir", None) else {}
    return load_settings(root, flags=flags, quick=True).state_path(root).resolve()


# --- status -------------------------------------------------------------------------------------

def cmd_status(args: argparse.Namespace) -> int:
    from novaproc.state.reader import list_indexed, list_runs, load_run

    folder = state_dir(args)
    if args.run:
        record = load_run(folder, args.run, to_show=True)
        _warn(record.warnings)
        print(json.dumps(record.to_json(), indent=2) if args.json else plain_text(render_run(record)))
        return ExitCode.OK
    problems: list[str] = []
    runs = list_indexed(problems) if args.all else list_runs(folder, problems)
    _warn(problems)
    if args.json:
        print(json.dumps([listing(r) for r in runs], indent=2))
    elif runs:
        rows = [[r.id, _status_text(r), _where(r.tasks_file),
                 time.strftime("%Y-%m-%d %H:%M", time.localtime(r.meta.created)), format_duration(r.wall),
                 _task_column(r)] for r in runs]
        print(plain_text(_table(["ID", "Status", "Tasks file", "Started", "Duration", "Task"], rows)))
    else:
        print("no runs of yours are known" if args.all else f"no runs in {folder}")
    return ExitCode.OK


def _where(tasks_file: str) -> str:
    """A tasks file as a person finds it: relative to here when below, else with ~ for home."""
    path = Path(tasks_file)
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    with contextlib.suppress(ValueError):
        return "~/" + str(path.relative_to(Path.home()))
    return tasks_file


def listing(record: RunRecord) -> dict[str, Any]:
    """One run as a line of `status --json`."""
    return {"id": record.id, "status": str(record.status), "task": _task_column(record),
            "running": [t.id for t in record.running], "duration": round(record.wall, 3),
            "exit_code": record.exit_code, "created": record.meta.created,
            "tasks_file": record.tasks_file, "description": record.description}


def render_run(record: RunRecord) -> str:
    """One run in detail: where it came from, how it went, and a line per task."""
    now = time.time() if record.status is RunState.RUNNING else None
    lines = [f"run {record.id}: {_status_text(record)}",
             f"  tasks file: {record.tasks_file}",
             f"  started:    {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(record.started))}"
             f", supervisor pid {record.pid}",
             f"  wall time:  {format_duration(record.wall)}",
             f"  speedup:    estimated {_speed(record.estimated_speedup)}, real {_speed(record.speedup)}"]
    if record.merge is not None:
        from novaproc.cli.views import landed_text

        lines.append(f"  landing:    {landed_text(record.merge)}")
        merged = record.merge.merged
        if merged:
            lines.append(f"  landed:     {', '.join(merged[:10])}" + (", ..." if len(merged) > 10 else ""))
        lines += [f"  left out:   {task}: {why}" for task, why in record.merge.left_out.items()]
    if record.status is RunState.CRASHED:
        lines.append(f"  its supervisor is gone; continue it with: novaproc resume {record.id}")
    if record.landing is not None:
        where = f" and the checkout at {record.landing.checkout}" if record.landing.checkout else ""
        lines.append(f"  landing:    interrupted: {record.landing.ref.removeprefix('refs/heads/')}{where} "
                     f"were moving from {record.landing.old[:12]} to {record.landing.new[:12]}; "
                     "resume finishes it first")
    shown, hidden = _shown_tasks(record.tasks)
    if hidden:
        counts = Counter(str(t.state) for t in record.tasks)
        lines.append(f"  tasks:      {len(record.tasks):,}: "
                     + ", ".join(f"{n:,} {state}" for state, n in counts.items()))
    states = {s: _task_state(record, s) for s in TaskState}
    rows = [[t.id, states[t.state], str(t.attempts), _maybe_duration(t.elapsed(now)),
             _exit_text(t.exit_code, t.signal), _task_note(t)] for t in shown]
    table = _table(["TASK", "STATE", "ATTEMPTS", "DURATION", "EXIT", ""], rows)
    more = [f"  ... and {hidden:,} more done (status --json lists every task)"] if hidden else []
    return "\n".join([*lines, "", *("  " + line for line in table.splitlines()), *more])


MAX_TASK_ROWS = 1_000  # a run of 100,000 tasks: every one that did not succeed, and the first others


def _shown_tasks(tasks: Sequence[RecordedTask]) -> tuple[list[RecordedTask], int]:
    """The tasks `status RUN` lists, in order, and how many done ones it leaves out."""
    room = MAX_TASK_ROWS - sum(t.state is not TaskState.DONE for t in tasks)
    shown = [t for t in tasks if t.state is not TaskState.DONE or (room := room - 1) >= 0]
    return shown, len(tasks) - len(shown)


def _status_text(record: RunRecord) -> str:
    if record.status in (RunState.RUNNING, RunState.CRASHED) or record.exit_code is None:
        return str(record.status)
    return f"{record.status} (exit {record.exit_code})"


def _task_column(record: RunRecord) -> str:
    running = record.running if record.status is RunState.RUNNING else []
    if not running:
        return record.description
    shown = ", ".join(t.label for t in running[:2])
    return shown + (f" +{len(running) - 2}" if len(running) > 2 else "")


def _task_state(record: RunRecord, state: TaskState) -> str:
    lost = record.status is not RunState.RUNNING and not state.finished
    return f"{state} (interrupted)" if lost and state is TaskState.RUNNING else str(state)


def _task_note(task: Any) -> str:
    if task.error:
        return task.error.splitlines()[0][:80]
    if task.state is TaskState.WAITING and task.reason:
        return str(task.reason)
    return "" if task.label == task.id else task.label


def _exit_text(code: int | None, sig: int | None) -> str:
    if sig:
        try:
            return signal.Signals(sig).name
        except ValueError:
            return f"signal {sig}"
    return "-" if code is None else str(code)


def _speed(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}x"


def _maybe_duration(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [header, *rows])


def _warn(messages: Any) -> None:
    for message in messages:
        print(f"novaproc: warning: {message}", file=sys.stderr)


# --- logs ---------------------------------------------------------------------------------------

def cmd_logs(args: argparse.Namespace) -> int:
    from novaproc.state.reader import load_run

    folder = state_dir(args)
    record = load_run(folder, args.run)
    if args.task in RUN_LOGS and args.task not in {t.id for t in record.tasks}:
        return _print_run_log(record, args.task)
    only = record.task(args.task).id if args.task else None
    tail = _Tail(sys.stdout.buffer, headers=only is None)
    while True:
        # seen before the last read: nothing is lost; one task's log ends when that task does
        stopped = record.status is not RunState.RUNNING or (
            only is not None and record.task(only).state.finished)
        tail.drain(record, [only] if only else [t.id for t in record.tasks])
        if stopped or not args.follow:
            break
        time.sleep(POLL_SECONDS)
        record = load_run(folder, record.id)
    if only and not tail.offsets.get(only):
        print(f"novaproc: task {only} has no output ({record.task(only).state})", file=sys.stderr)
    return ExitCode.OK


RUN_LOGS = ("verify", "setup")  # the run's own logs, beside its tasks'


def _print_run_log(record: RunRecord, name: str) -> int:
    """`logs RUN verify` / `logs RUN setup`: the output of verify, or of worktree_setup."""
    try:
        sys.stdout.buffer.write((record.folder / f"{name}.log").read_bytes())
    except FileNotFoundError:
        print(f"novaproc: run {record.id} has no {name} output", file=sys.stderr)
    return ExitCode.OK


class _Tail:
    """Prints what each task's log gained since the last look, with a header when the task changes."""

    def __init__(self, out: Any, headers: bool) -> None:
        self.out, self.headers = out, headers
        self.offsets: dict[str, int] = {}
        self.current: str | None = None

    def drain(self, record: RunRecord, task_ids: list[str]) -> None:
        from novaproc.state.format import task_log_path

        for tid in task_ids:
            data = self._read_new(task_log_path(record.folder, tid), self.offsets.get(tid, 0))
            if data is None or (not data and tid in self.offsets):
                continue
            self.offsets[tid] = self.offsets.get(tid, 0) + len(data)
            if self.headers and tid != self.current:
                gap = b"\n" if self.current is not None else b""
                self.out.write(gap + f"==> {tid} <==\n".encode())
            self.current = tid
            self.out.write(data)
        self.out.flush()

    @staticmethod
    def _read_new(path: Path, offset: int) -> bytes | None:
        try:
            with path.open("rb") as f:
                f.seek(offset)
                return f.read()
        except FileNotFoundError:
            return None


# --- wait and cancel ----------------------------------------------------------------------------

def cmd_wait(args: argparse.Namespace) -> int:
    record = wait_until_stopped(state_dir(args), args.run)
    if record is None:
        raise InternalError("wait without a timeout gave up")
    return _exit_code(record)


def wait_until_stopped(folder: Path, run_id: str, timeout: float | None = None, *,
                       sleep: Callable[[float], None] = time.sleep,
                       clock: Callable[[], float] = time.monotonic) -> RunRecord | None:
    """The run once it is no longer running; None if `timeout` seconds pass first."""
    from novaproc.state.reader import load_run

    deadline = None if timeout is None else clock() + timeout
    while True:
        record = load_run(folder, run_id)
        if record.status is not RunState.RUNNING:
            return record
        if deadline is not None and clock() >= deadline:
            return None
        sleep(POLL_SECONDS)


def _exit_code(record: RunRecord) -> int:
    if record.status is RunState.CRASHED:
        print(f"novaproc: run {record.id} crashed: its supervisor (pid {record.pid}) is gone and "
              f"did not finish; continue it with: novaproc resume {record.id}", file=sys.stderr)
        return ExitCode.FAILED
    return int(record.exit_code if record.exit_code is not None else ExitCode.FAILED)


def cmd_cancel(args: argparse.Namespace) -> int:
    from novaproc.state.reader import load_run

    folder = state_dir(args)
    record = load_run(folder, args.run)
    if record.status is RunState.RUNNING and signal_supervisor(record, signal.SIGTERM):
        print(f"stopping run {record.id} (supervisor pid {record.pid})...", file=sys.stderr)
        stopped = wait_until_stopped(folder, record.id, args.timeout)
        if stopped is None:
            raise EnvironmentFault(f"run {record.id} did not stop within {args.timeout:g}s; its "
                                   f"supervisor (pid {record.pid}) is still running; try again, or "
                                   f"kill -9 {record.pid} and then novaproc resume {record.id}")
        return _report_cancel(stopped, asked=True)
    return _report_cancel(load_run(folder, record.id), asked=False)


def _report_cancel(record: RunRecord, asked: bool) -> int:
    if record.status is RunState.CANCELLED and asked:
        print(f"cancelled run {record.id}; continue it with: novaproc resume {record.id}")
    elif record.status is RunState.CRASHED:
        what = "stopped without recording its end" if asked else "is not running: it crashed"
        print(f"run {record.id} {what}; continue it with: novaproc resume {record.id}",
              file=sys.stderr)
        return ExitCode.FAILED if asked else ExitCode.OK
    else:
        when = "before the cancel took effect" if asked else "already"
        print(f"run {record.id} {when} finished: {_status_text(record)}")
    return ExitCode.OK


def signal_supervisor(record: RunRecord, sig: int) -> bool:
    from novaproc.state.format import process_start_time

    """Send `sig` to the run's supervisor if it is still the process the journal names.

    A pidfd pins the process before its start time is checked, so a reused pid is never hit.
    False when it is gone; EnvironmentFault when it belongs to someone we may not signal.
    """
    pid = record.pid
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except OSError:
        pidfd = None  # no pidfd on this kernel: a tiny reuse window remains
    try:
        if process_start_time(pid) != record.meta.pid_start:
            return False
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        raise EnvironmentFault(f"not allowed to signal run {record.id}'s supervisor (pid {pid}): "
                               "it belongs to another user") from None
    finally:
        if pidfd is not None:
            os.close(pidfd)
