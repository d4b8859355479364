"""The one way tests start the real CLI: `python -m novaproc ARGS...` with this interpreter, in a
clean environment (see clean_env), with no stdin unless one is given."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from typing import IO, Any

from support.env import clean_env

Arg = str | os.PathLike[str]
Stream = int | IO[Any] | None


def cli_argv(*args: Arg) -> list[str]:
    return [sys.executable, "-m", "novaproc", *map(str, args)]


def run_cli(
    *args: Arg,
    cwd: Arg | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float = 60,
    stdout: Stream = subprocess.PIPE,
    **popen: Any,
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to its end; never raises on a non-zero exit.

    `env` adds to a clean environment; stdin is empty unless `input` is given; stdout and stderr
    are captured as text (stdout goes elsewhere when `stdout` says so); `popen` passes further
    subprocess arguments (preexec_fn, ...).
    """
    return subprocess.run(
        cli_argv(*args),
        cwd=cwd,
        env=clean_env(env),
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
        check=False,
        **popen,
    )


def spawn_cli(
    *args: Arg,
    cwd: Arg | None = None,
    env: Mapping[str, str] | None = None,
    drop_env: Iterable[str] = (),
    stdin: Stream = subprocess.DEVNULL,
    stdout: Stream = subprocess.PIPE,
    stderr: Stream = subprocess.PIPE,
    text: bool = True,
    **popen: Any,
) -> subprocess.Popen[Any]:
    """Start the CLI in the background: the same environment as run_cli (without `drop_env`),
    stdin empty unless told otherwise, stdout and stderr piped as text unless told otherwise."""
    return subprocess.Popen(
        cli_argv(*args),
        cwd=cwd,
        env=clean_env(env, drop=drop_env),
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        text=text,
        **popen,
    )
