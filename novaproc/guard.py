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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

DEFAULT_GRACE = 5.0


def run_guarded(argv: Sequence[str], *, cwd: Path, stdout: int | IO[bytes] | None,
                env: Mapping[str, str] | None = None, timeout: float | None = None,
                grace: float = DEFAULT_GRACE) -> tuple[int | None, bytes]:
    """Run `argv` in `cwd` under a guardian, stderr with stdout; (its exit code, or None when
    `timeout` ran out and its tree was ended; what it wrote, when `stdout` is PIPE)."""
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
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out or b""
    except subprocess.TimeoutExpired:
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
