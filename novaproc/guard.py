"""The run's own commands (`verify`, `worktree_setup`) run below a guardian, as tasks run
below a worker, so that they too die with a supervisor killed by SIGKILL:

    supervisor ── holds a pipe open ──▶ python -m novaproc.guard ── own session ──▶ CMD
                                        (subreaper; the pipe's EOF ends CMD's whole tree)

`run_guarded` is the supervisor's side; `main` is the guardian's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

DEFAULT_GRACE = 5.0
STOP_POLL = 0.1  # seconds between asking whether the run stops


def run_guarded(argv: Sequence[str], *, cwd: Path, stdout: int | IO[bytes] | None,
                env: Mapping[str, str] | None = None, timeout: float | None = None,
                grace: float = DEFAULT_GRACE, stop: Callable[[], bool] | None = None,
                ) -> tuple[int | None, bytes]:
    """Run `argv` in `cwd` under a guardian, stderr with stdout; (its exit code, or None when
    `timeout` ran out or `stop()` said so and its tree was ended; what it wrote, when `stdout`
    is PIPE). `stop` is asked every STOP_POLL seconds: a Ctrl-C must not wait for a long verify."""
    watch, hold = os.pipe()  # the guardian reads `watch`; we hold `hold` open while we live
    try:
        proc = subprocess.Popen([sys.executable, "-m", "novaproc.guard", str(watch), str(grace), *argv],
                                cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=stdout,
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
            if stop is not None:
                left = STOP_POLL if left is None else min(left, STOP_POLL)
            try:  # communicate again after a TimeoutExpired loses nothing (its documentation)
                out, _ = proc.communicate(timeout=left)
                return proc.returncode, out or b""
            except subprocess.TimeoutExpired:
                if (stop is not None and stop()) or (deadline is not None and time.monotonic() >= deadline):
                    break
        proc.terminate()  # the guardian ends the tree: SIGTERM, SIGKILL after the grace period
        out, _ = proc.communicate()
        return None, out or b""
    finally:
        os.close(hold)


def main(args: list[str]) -> int:
    import multiprocessing.connection

    from .worker import guard_command

    watch, grace, argv = int(args[0]), float(args[1]), args[2:]
    return guard_command(argv, multiprocessing.connection.Connection(watch, writable=False), grace)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
