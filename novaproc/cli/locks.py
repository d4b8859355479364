"""The `lock` and `locks` commands: run a command while holding locks, and show who holds what.

    novaproc lock PATH|@NAME... [--shared] [--timeout S] -- CMD...
    novaproc locks [--json]

`lock` works like flock(1) with novaproc's path hierarchy: paths are relative to the current
folder and name the same locks as a tasks file's paths for the same files.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from novaproc.cli.text import one_line
from novaproc.errors import BusyError, ExitCode, UsageError
from novaproc.inputs import paths

if TYPE_CHECKING:  # the lock machinery (and portalocker) loads when a lock command runs: not for --help
    from novaproc.locking.manager import LockInfo, LockRequest

LOCK_USAGE = "novaproc lock PATH|@NAME... [--shared] [--timeout S] -- CMD..."
LOCK_EPILOG = """\
examples:
  novaproc lock data/cache.sqlite -- python refresh.py
  novaproc lock --shared docs/ -- make html
  novaproc lock @docker --timeout 60 -- docker build .

exit codes: CMD's own (128+N when a signal N ended it), 75 when --timeout ran out,
127 when CMD does not exist, 2 for bad usage.
"""
NOT_FOUND, NOT_EXECUTABLE = 127, 126  # what a shell answers


class _OptionsParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"lock: {message} (see novaproc lock --help)")


def _add_lock_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shared", action="store_true", help="shared (read) locks: holders of shared "
                        "locks run together; the default is exclusive")
    parser.add_argument("--timeout", type=_seconds, metavar="S",
                        help="give up after S seconds with exit code 75 (0: try once); default: wait")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add `lock` and `locks` to the subcommands of the novaproc parser."""
    p = sub.add_parser("lock", help="run a command while holding locks on paths or resources",
                       usage=LOCK_USAGE, epilog=LOCK_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Wait for locks on paths (a folder covers everything under it; a glob "
                       "counts as its folder) and named resources (@docker, @git...), run CMD while "
                       "holding them, then release them. Waiters are served first come, first served.")
    _add_lock_options(p)
    p.add_argument("words", nargs=argparse.REMAINDER, metavar="PATH|@NAME... -- CMD...",
                   help="what to lock, then -- and the command to run")
    p.set_defaults(handler=cmd_lock)

    p = sub.add_parser("locks", help="show who holds and who waits for which paths and resources",
                       description="List the holders and waiters of every novaproc lock of this user "
                       "on this machine, in the order they are served.")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_locks)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


# ---------------------------------------------------------------------------------- lock

def cmd_lock(args: argparse.Namespace) -> int:
    targets, command = _split(args.words)
    options = _OptionsParser(prog="novaproc lock", add_help=False)
    _add_lock_options(options)
    options.add_argument("targets", nargs="*")
    parsed = options.parse_args(targets, namespace=argparse.Namespace(shared=args.shared,
                                                                      timeout=args.timeout))
    if not parsed.targets:
        raise UsageError(f"lock: name at least one path or @resource; usage: {LOCK_USAGE}")
    from novaproc.locking.manager import LockManager, Owner

    label = shlex.join(command)
    request = lock_request(parsed.targets, shared=parsed.shared, cwd=os.getcwd(), label=label)
    with LockManager(owner=Owner(label=f"novaproc lock {label}")) as manager:
        try:
            grant = manager.acquire(request, timeout=parsed.timeout)
        except BusyError as e:
            raise BusyError(f"lock: {e}") from None
        try:
            return run_command(command, keep=manager.life_fd())
        finally:
            manager.release(grant)


def _split(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """The words before the first `--` and the command after it."""
    if "--" not in words:
        raise UsageError(f"lock: put -- between the locks and the command; usage: {LOCK_USAGE}")
    at = list(words).index("--")
    command = list(words[at + 1:])
    if not command:
        raise UsageError(f"lock: no command after --; usage: {LOCK_USAGE}")
    return list(words[:at]), command


def lock_request(targets: Sequence[str], *, shared: bool, cwd: str, label: str) -> LockRequest:
    """Paths (relative to `cwd`, canonical like a tasks file's) and @resources as one lock set."""
    from novaproc.locking.manager import LockRequest
    from novaproc.locking.table import RESOURCE_NAME

    found: list[str] = []
    resources: dict[str, int] = {}
    for target in targets:
        if target.startswith("@"):
            name = target[1:]
            if not RESOURCE_NAME.fullmatch(name):
                raise UsageError(f"lock: {target!r}: a resource is @ and a name of letters, "
                                 "digits, '_', '.' or '-', e.g. @docker")
            resources[name] = 1
        else:
            found.append(canonical_path(target, cwd))
    return LockRequest(key="lock", label=label, exclusive=() if shared else tuple(found),
                       shared=tuple(found) if shared else (), resources=resources,
                       capacities=_capacities(resources, cwd))


def canonical_path(target: str, cwd: str) -> str:
    """`target` as the lock manager names it: absolute, symlinks resolved, a glob cut to its folder."""
    if paths.GLOB_CHARS & set(target):
        target = paths.fixed_prefix(target) or "."
    return paths.canonical(os.path.normpath(target), cwd)


def _capacities(resources: dict[str, int], cwd: str) -> dict[str, int]:
    """Capacities from [resources] of nova.toml at the root of the current repository."""
    from novaproc.locking.table import SERIAL_RESOURCES

    if not set(resources) - SERIAL_RESOURCES:
        return {}
    from novaproc.inputs.settings import load_settings

    root, _ = paths.find_root(Path(cwd))
    declared = load_settings(root, quick=True).resources
    return {name: declared[name] for name in resources if name in declared}


def run_command(command: Sequence[str], keep: int) -> int:
    """Run `command`, passing on SIGTERM, SIGHUP and SIGINT; its exit code, shell style. It
    inherits `keep`, the lock holder's life: were this process killed, the locks would hold
    until the command too has ended, not let another holder in beside it."""
    try:
        proc = subprocess.Popen(command, pass_fds=(keep,))
    except FileNotFoundError:
        print(f"novaproc: error: lock: {command[0]}: command not found", file=sys.stderr)
        return NOT_FOUND
    except PermissionError:
        print(f"novaproc: error: lock: {command[0]}: permission denied", file=sys.stderr)
        return NOT_EXECUTABLE
    with _forwarding_signals(proc):
        code = proc.wait()
    return code if code >= 0 else 128 - code


@contextlib.contextmanager
def _forwarding_signals(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """While CMD runs, a signal to us goes to it; we release the locks only once it has ended."""
    on_terminal = _in_terminal_foreground()

    def forward(signum: int, _frame: object) -> None:
        if signum == signal.SIGINT and on_terminal:
            return  # Ctrl-C reached CMD from the terminal already
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    signals = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    previous = {signum: signal.signal(signum, forward) for signum in signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _in_terminal_foreground() -> bool:
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


# --------------------------------------------------------------------------------- locks

def cmd_locks(args: argparse.Namespace) -> int:
    from novaproc.locking.manager import default_lock_dir, snapshot

    rows = snapshot()
    if args.json:
        print(json.dumps({"lock_dir": str(default_lock_dir()), "locks": [r.to_json() for r in rows]},
                         indent=2))
    elif not rows:
        print(f"no locks held or waited for (lock folder {default_lock_dir()})")
    else:
        print(render_locks(rows, now=time.time()))
    return ExitCode.OK


def _shown(what: str) -> str:
    """A lock's name as a person reads it: a run's hold on its tasks file is not a resource
    the user named (see run_request)."""
    return "(its tasks file: one run at a time)" if what.startswith("@run.") else what


def render_locks(rows: Sequence[LockInfo], now: float) -> str:
    """A table, in the order waiters are served: holders, then the line."""
    header = ("WHAT", "MODE", "STATE", "PID", "RUN", "TASK/COMMAND", "SINCE")
    # a command line or task label is shown, never obeyed: no escape sequence reaches the terminal
    lines = [header] + [(one_line(_shown(r.what)), r.mode, r.state, str(r.pid), r.run_id or "-",
                         one_line((r.task if r.run_id else r.command) or "-"),
                         _since(r.since, now)) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=False)) + "  " + line[-1]
                     for line in lines)


def _since(when: float, now: float) -> str:
    seconds = max(0, int(now - when))
    age = f"{seconds}s" if seconds < 120 else f"{seconds // 60}m" if seconds < 7200 else f"{seconds // 3600}h"
    return f"{time.strftime('%H:%M:%S', time.localtime(when))} ({age} ago)"
