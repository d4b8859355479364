"""What `plan`, `status` and `lock` load: each start pays for every module it imports, so the
libraries a command does not use stay out (see the function-level imports they come from)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.env import clean_env

# never needed by these commands when all goes well
UNUSED = {
    "plan": ["pydantic", "subprocess", "threading", "difflib", "novaproc.locking.folder"],
    "status": ["pydantic", "novaproc.inputs.taskfile", "hashlib", "subprocess", "threading", "difflib"],
    "lock": ["pydantic", "hashlib", "difflib", "novaproc.inputs.taskfile", "novaproc.messages"],
}
TASKS = '[run]\nisolation = "none"\n[tasks.a]\ncmd = ["true"]\n'


def loaded(args: list[str], cwd: Path, env: dict[str, str], names: list[str]) -> list[str]:
    """Which of `names` a `novaproc ARGS` process had imported when its command was done."""
    probe = ("import json, sys; from novaproc.cli.main import main; code = main(sys.argv[1:]); "
             f"print(json.dumps([code, [n for n in {names!r} if n in sys.modules]]))")
    out = subprocess.run([sys.executable, "-c", probe, *args], cwd=cwd, env=env, capture_output=True,
                         text=True, check=True).stdout
    code, found = json.loads(out.splitlines()[-1])
    assert code == 0
    return found


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "tasks.toml").write_text(TASKS)
    env = clean_env({"XDG_CACHE_HOME": str(tmp_path / "cache"), "NOVA_LOCK_DIR": str(tmp_path / "locks")})
    return tmp_path / "work", env


def test_plan_with_its_inputs_cached_loads_only_what_it_uses(folder):
    cwd, env = folder
    loaded(["plan", "tasks.toml"], cwd, env, [])  # fills the cache
    assert loaded(["plan", "tasks.toml"], cwd, env, UNUSED["plan"]) == []


def test_status_loads_only_what_it_uses(folder):
    cwd, env = folder
    subprocess.run([sys.executable, "-m", "novaproc", "run", "-q", "tasks.toml"], cwd=cwd, env=env,
                   capture_output=True, check=True)
    assert loaded(["status"], cwd, env, UNUSED["status"]) == []
    run_id = next((cwd / ".nova" / "runs").iterdir()).name
    assert loaded(["status", run_id], cwd, env, UNUSED["status"]) == []


def test_lock_loads_only_what_it_uses(folder):
    cwd, env = folder
    assert loaded(["lock", "P", "--", "true"], cwd, env, UNUSED["lock"]) == []
