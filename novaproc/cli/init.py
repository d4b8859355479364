"""`novaproc init`: a starter nova.toml and tasks.toml, written with tomli-w."""

from __future__ import annotations

from pathlib import Path

import tomli_w

from novaproc.errors import UsageError

NOVA_HEADER = """\
# novaproc settings for this repository. Every key is optional; see nova.toml in the
# novaproc sources for each one explained. Environment (NOVA_MAX_PARALLEL, ...) and
# command-line flags override these; a tasks file's [run] table does too.
"""

TASKS_HEADER = """\
# A starter tasks file: `novaproc plan tasks.toml` explains it, `novaproc run tasks.toml`
# runs it. cmd is a shell string (or an argv list); writes/reads are the paths a task
# changes/needs, so tasks touching the same files never run at once.
"""

NOVA_SETTINGS = {
    "max_parallel": 4,
    "cpu_limit": 90,
    "memory_limit": 90,
    "kill_grace": 5,
    "fail_fast": False,
    "on_conflict": "rerun",
    "resources": {"docker": 1},
}

STARTER_TASKS = {
    "tasks": {
        "lint": {"description": "check style", "cmd": "echo linting", "reads": ["src/"]},
        "build": {"description": "build the package", "cmd": "echo building",
                  "writes": ["build/"], "timeout": "10m"},
        "test": {"description": "run the tests", "cmd": "echo testing",
                 "depends_on": ["build"], "reads": ["build/"], "retries": 1},
    }
}


def write_starter(folder: Path, *, force: bool) -> list[Path]:
    """Write nova.toml and tasks.toml into `folder`; refuse to overwrite unless `force`."""
    files = {
        folder / "nova.toml": NOVA_HEADER + tomli_w.dumps(NOVA_SETTINGS),
        folder / "tasks.toml": TASKS_HEADER + tomli_w.dumps(STARTER_TASKS),
    }
    existing = [p for p in files if p.exists()]
    if existing and not force:
        raise UsageError(f"{', '.join(map(str, existing))} already exist(s); "
                         "use --force to overwrite")
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder")
    for path, text in files.items():
        path.write_text(text)
    return list(files)
