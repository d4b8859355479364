"""Shared test helpers: run the real CLI in a subprocess, and write tasks files.

Import them directly (`from conftest import run_cli, write_tasks`) or use the fixtures of
the same purpose (`cli`, `tasks_file`).
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import psutil
import pytest

from novaproc.messages import Event


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """novaproc caches validated inputs under XDG_CACHE_HOME: keep the suite's out of ~/.cache."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ without NOVA_* settings (so the caller's shell cannot leak in), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVA_")}
    env.update(extra or {})
    return env


def run_cli(
    *args: str | os.PathLike[str],
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """`python -m novaproc ARGS...` with this interpreter; never raises on a non-zero exit.

    `env` adds to a clean environment (see clean_env); stdin is empty unless `input` is given.
    """
    return subprocess.run(
        [sys.executable, "-m", "novaproc", *map(str, args)],
        cwd=cwd,
        env=clean_env(env),
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def write_tasks(tmp_path: Path, text: str, name: str = "tasks.toml") -> Path:
    """Write `text` (dedented) to tmp_path/name and return its path."""
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli


@pytest.fixture
def tasks_file(tmp_path: Path) -> Callable[..., Path]:
    """write_tasks bound to this test's tmp_path."""
    return lambda text, name="tasks.toml": write_tasks(tmp_path, text, name)


@pytest.fixture
def isolated_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """git as on a fresh machine: no user or system config, no GIT_DIR from the caller."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(var, raising=False)


_EVENT_DEFAULTS: dict[str, dict[str, object]] = {
    "run_started": {"pid": 0, "strategy": "simple_parallel", "estimated_speedup": 1.0, "max_parallel": 1,
                    "tasks": 0},
    "run_finished": {"wall": 0.0, "task_time": 0.0},
    "message": {"level": "info", "text": ""},
}


def event(run_id: str, at: float, kind: str, task: str | None = None, state: object = None,
          **data: object) -> Event:
    """An Event as the supervisor would write it, with the fields a test leaves out filled in."""
    fields = {**_EVENT_DEFAULTS.get(kind, {}), **data}
    if kind == "run_finished" and "state" not in fields:
        code = fields.get("exit_code")
        fields["state"] = "done" if code == 0 else "cancelled" if code in (130, 143) else "failed"
    return Event.from_json({"event": kind, "run_id": run_id, "time": at, "task": task,
                            "state": state, **fields})


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


# ---------------------------------------------------------------- processes a test started


def marker() -> str:
    """A unique, sleep-able duration: `sleep <marker>` names a process no other test starts."""
    return f"{random.randint(300, 899)}.{random.randint(10**7, 10**8 - 1)}"


def marker_procs(mark: str) -> list[psutil.Process]:
    """Live (not zombie) processes whose command line contains `mark`."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and mark in " ".join(p.info["cmdline"] or ()):
                found.append(p)
        except psutil.Error:
            continue
    return found


def sleepers(mark: str) -> list[psutil.Process]:
    """The `sleep <mark>` processes themselves (not the shells that started them)."""
    return [p for p in marker_procs(mark) if _cmdline(p)[:1] in (["sleep"], ["/usr/bin/sleep"])]


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def assert_gone(mark: str, timeout: float = 10.0) -> None:
    """Within `timeout`, no process carries `mark`; any left are killed, then the test fails."""
    deadline = time.monotonic() + timeout
    while marker_procs(mark):
        if time.monotonic() > deadline:
            left = [p.info["cmdline"] for p in marker_procs(mark)]
            for p in marker_procs(mark):  # do not leak them into the rest of the suite
                with contextlib.suppress(psutil.Error):
                    p.kill()
            raise AssertionError(f"processes with marker {mark} remain: {left}")
        time.sleep(0.05)


@pytest.fixture
def box(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A Sandbox (test_e2e_worktree) for the end-to-end tests: the real CLI, its own state."""
    from test_e2e_worktree import Sandbox

    sandbox = Sandbox(tmp_path)
    yield sandbox
    sandbox.close()
