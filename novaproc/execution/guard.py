"""The run's own commands (`verify`, `worktree_setup`) run below a guardian, as tasks run
below a worker, so that they too die with a supervisor killed by SIGKILL:

    supervisor ── holds a pipe open ──▶ guardian (python, guardian_main) ── own session ──▶ CMD
                                        (subreaper; the pipe's EOF ends CMD's whole tree)

`run_guarded` is the supervisor's side; `guardian_main` is the guardian's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from novaproc.execution.proctree import DEFAULT_GRACE

STOP_POLL = 0.1  # seconds between asking whether the run stops


@dataclass(frozen=True, slots=True)
class Ending:
    """How a guarded command is ended early: when `stop()` says the run stops (asked every
    STOP_POLL seconds, so a Ctrl-C need not wait for a long verify), with SIGTERM to its tree
    and SIGKILL `grace` seconds later (the run's kill_grace)."""

    stop: Callable[[], bool] | None = None
    grace: float = DEFAULT_GRACE

    def stopping(self) -> bool:
        return self.stop is not None and self.stop()


# The guardian imports this very novaproc: not one in the command's folder (a worktree of any
# commit, maybe of novaproc itself), which -P keeps off sys.path. _OURS is the folder that holds
# the novaproc package, however deep this module lies in it.
_OURS = str(Path(__file__).resolve().parents[__name__.count(".")])
_GUARDIAN = (f"import sys; sys.path.insert(0, sys.argv.pop(1)); from {__name__} import guardian_main; "
             "raise SystemExit(guardian_main(sys.argv[1:]))")

UNSTOPPED = Ending()  # ended only by its timeout, SIGTERM then SIGKILL after the default grace


def run_guarded(argv: Sequence[str], *, cwd: Path, stdout: int | IO[bytes] | None,
                env: Mapping[str, str] | None = None, timeout: float | None = None,
                ending: Ending = UNSTOPPED) -> tuple[int | None, bytes]:
    """Run `argv` in `cwd` under a guardian, stderr with stdout; (its exit code, or None when
    `timeout` ran out or the run stopped, and its tree was ended as `ending` says; what it
    wrote, when `stdout` is PIPE)."""
    watch, hold = os.pipe()  # the guardian reads `watch`; we hold `hold` open while we live
    try:
        guardian = [sys.executable, "-P", "-c", _GUARDIAN, _OURS, str(watch), str(ending.grace)]
        proc = subprocess.Popen([*guardian, *argv], cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=stdout,
                                stderr=subprocess.STDOUT, pass_fds=(watch,), start_new_session=True)
    except BaseException:
        os.close(hold)
        raise
    finally:
        os.close(watch)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if ending.stop is not None:
                left = STOP_POLL if left is None else min(left, STOP_POLL)
            try:  # communicate again after a TimeoutExpired loses nothing (its documentation)
                out, _ = proc.communicate(timeout=left)
                return proc.returncode, out or b""
            except subprocess.TimeoutExpired:
                if ending.stopping() or (deadline is not None and time.monotonic() >= deadline):
                    break
        proc.terminate()  # the guardian ends the tree: SIGTERM, SIGKILL after the grace period
        out, _ = proc.communicate()
        return None, out or b""
    finally:
        os.close(hold)


def guardian_main(args: list[str]) -> int:
    import multiprocessing.connection

    from novaproc.execution.worker import guard_command

    watch, grace, argv = int(args[0]), float(args[1]), args[2:]
    os.set_inheritable(watch, False)  # ours alone: the command must not hold it open
    return guard_command(argv, multiprocessing.connection.Connection(watch, writable=False), grace)
