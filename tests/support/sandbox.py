"""The end-to-end harness: a Sandbox gives one test private novaproc folders (state, worktrees,
locks) and runs the real CLI with them, to its end (Ran) or in the background (Spawned)."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from support.cli import run_cli, spawn_cli
from support.repo import GIT_ENV, git, nova_branches, worktree_paths
from support.waiting import wait_until

RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
CLI_POLL = 0.2  # seconds between polls that start a CLI process (each costs a Python start-up)


class Ran:
    """A finished CLI command: exit code, output, and (for --json) its events."""

    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"<exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}>"

    @property
    def text(self) -> str:
        return self.out + self.err

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines() if line.startswith("{")]

    @property
    def run_id(self) -> str:
        for event in self.events:
            return str(event["run_id"])
        match = re.search(r"novaproc: run ([A-Za-z0-9_-]+):", self.out)
        assert match, f"no run id in the output of {self!r}"
        return match.group(1)

    def event(self, kind: str) -> dict[str, Any]:
        found = [e for e in self.events if e["event"] == kind]
        assert found, f"no {kind} event in {self!r}"
        return found[-1]

    @property
    def summary(self) -> dict[str, Any]:
        return self.event("summary")

    @property
    def notes(self) -> str:
        return "\n".join(self.summary["notes"])

    def states(self) -> dict[str, str]:
        return {tid: t["state"] for tid, t in self.summary["tasks"].items()}


class Spawned:
    """A CLI command running in the background, its stdout lines collected by a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._new: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines) if line.startswith("{")]

    def wait_event(self, match: Callable[[dict[str, Any]], bool], what: str,
                   timeout: float = 20.0) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            if self.proc.poll() is not None and not self._reader.is_alive():
                hits = [e for e in self.events() if match(e)]
                assert hits, f"exited {self.proc.returncode} before {what}: {''.join(self.lines)}"
            return next((e for e in self.events() if match(e)), None)
        return wait_until(found, what, timeout)

    def finish(self, timeout: float = 60.0) -> Ran:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self._reader.join(5)
        assert self.proc.stderr is not None
        return Ran(code, "".join(self.lines), self.proc.stderr.read())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(5)


class Sandbox:
    """Private novaproc folders for one test (state, worktrees, locks) and the CLI run with them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state, self.worktrees, self.locks = root / "state", root / "worktrees", root / "locks"
        self.env = {"NOVA_STATE_DIR": str(self.state), "NOVA_WORKTREE_DIR": str(self.worktrees),
                    "NOVA_LOCK_DIR": str(self.locks), **GIT_ENV}
        self._spawned: list[Spawned] = []

    def cli(self, *args: str | os.PathLike[str], cwd: Path | None = None, timeout: float = 60) -> Ran:
        proc = run_cli(*args, cwd=cwd or self.root, env=self.env, timeout=timeout)
        return Ran(proc.returncode, proc.stdout, proc.stderr)

    def spawn(self, *args: str | os.PathLike[str], cwd: Path | None = None) -> Spawned:
        spawned = Spawned(spawn_cli(*args, cwd=cwd or self.root, env=self.env))
        self._spawned.append(spawned)
        return spawned

    def run(self, tasks: Path, *args: str, cwd: Path | None = None, timeout: float = 60) -> Ran:
        """`run TASKS --json ARGS`."""
        return self.cli("run", tasks, "--json", *args, cwd=cwd or tasks.parent, timeout=timeout)

    def status(self, run_id: str) -> dict[str, Any]:
        ran = self.cli("status", run_id, "--json")
        assert ran.code == 0, ran
        return json.loads(ran.out)

    def close(self) -> None:
        """Kill whatever a failing test left running."""
        for spawned in self._spawned:
            spawned.kill()
            spawned.proc.stdout and spawned.proc.stdout.close()
            spawned.proc.stderr and spawned.proc.stderr.close()


def assert_no_leftovers(repo: Path, box: Sandbox) -> None:
    """Only the main worktree, an empty worktree folder, no nova/* branch."""
    assert worktree_paths(repo) == [repo.resolve()]
    assert not box.worktrees.exists() or list(box.worktrees.iterdir()) == []
    assert nova_branches(repo) == []


def assert_clean(repo: Path) -> None:
    assert git(repo, "status", "--porcelain", strip=False) == ""
