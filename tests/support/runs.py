"""`novaproc run` of a tasks file outside git (isolation "none"), with a private state dir."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from support.cli import run_cli
from support.tasks import write_tasks


class Result:
    """A finished `novaproc run`, with its state dir to read the journal and logs from."""

    def __init__(self, proc: subprocess.CompletedProcess[str], state: Path) -> None:
        self.proc, self.state = proc, state
        self.code, self.out, self.err = proc.returncode, proc.stdout, proc.stderr

    def __repr__(self) -> str:
        return f"<exit {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}>"

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]

    def summary(self) -> dict:
        last = self.lines()[-1]
        assert last["event"] == "summary", self
        return last

    def tasks(self) -> dict[str, dict]:
        return self.summary()["tasks"]

    def states(self) -> dict[str, str]:
        return {tid: t["state"] for tid, t in self.tasks().items()}

    def runs(self) -> list[Path]:
        folder = self.state / "runs"
        return sorted(folder.iterdir()) if folder.is_dir() else []

    def log(self, tid: str) -> str:
        (run,) = self.runs()
        return (run / "logs" / f"{tid}.log").read_text()


def nova(tmp_path: Path, text: str, *args: str, env: dict[str, str] | None = None,
         json_output: bool = True, timeout: float = 60) -> Result:
    """Write `text` as tasks.toml in tmp_path and run it (with --json unless told otherwise)."""
    path = write_tasks(tmp_path, text)
    state = tmp_path / "state"
    flags = ["--json"] if json_output else []
    proc = run_cli("run", path, *flags, *args, cwd=tmp_path,
                   env={"NOVA_STATE_DIR": str(state), **(env or {})}, timeout=timeout)
    return Result(proc, state)
