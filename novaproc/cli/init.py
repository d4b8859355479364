"""`novaproc init`: a starter nova.toml (every common setting, explained) and tasks.toml."""

from __future__ import annotations

from pathlib import Path

import tomli_w

from novaproc.errors import UsageError

# each setting with what it does, so the file needs nothing else to be understood
NOVA_TOML = """\
# novaproc settings for this repository. Every key is optional; the values below are the
# defaults. NOVA_* variables (NOVA_MAX_PARALLEL, NOVA_STATE_DIR, NOVA_WORKTREE_DIR), a tasks
# file's [run] table and command-line flags override them, in that order.

# How many tasks run at once.
max_parallel = 4

# No new task starts while CPU or memory use is above these percents (one can always run);
# 100 never holds a task back, which suits tasks that wait on the network.
cpu_limit = 90
memory_limit = 90

# Seconds between SIGTERM and SIGKILL when a task is stopped (timeout, cancel, Ctrl-C).
kill_grace = 5

# Wait before a failed task's next attempt (its retries), doubling each time.
retry_delay = "1s"

# true: the first failure stops the run; false: everything that does not depend on it runs.
fail_fast = false

# A result that conflicts with those merged before it: "rerun" the task on the merged result,
# or "fail" (its branch is kept, exit 3).
on_conflict = "rerun"

# A command run on the merged result before it lands, e.g. "python -m pytest -q"; when it
# fails, the task that broke it is found by bisection and left out (exit 4).
# verify = "python -m pytest -q"

# What lands on the target: "merge" (a merge commit a result), "linear" or "squash".
history = "merge"

# Untracked or ignored paths each worktree gets from your checkout (a worktree holds only
# tracked files), and a command run in each new worktree.
# worktree_include = [".env", "node_modules"]
# worktree_setup = "pip install -q -e ."

# Journals of runs that ended longer ago are removed by `novaproc clean --runs`.
keep_runs = "30d"

# Capacities of named resources tasks hold while running (resources = ["docker"]).
[resources]
docker = 1
"""

TASKS_HEADER = """\
# A starter tasks file: `novaproc plan tasks.toml` explains it, `novaproc run tasks.toml`
# runs it. cmd is a shell string (or an argv list); writes/reads are the paths a task
# changes/needs, so tasks touching the same files never run at once.
"""

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
        folder / "nova.toml": NOVA_TOML,
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
