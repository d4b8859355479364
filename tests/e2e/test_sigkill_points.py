"""End to end: a SIGKILL of the supervisor at any moment (DESIGN.md section 4, "Runs" and
"Processes") loses nothing that finished, leaves no process behind and no lock held, keeps
`git fsck` clean and the user's checkout as it was, and `resume` ends with every task's result.

One test per point: while tasks run, while a task waits on another process's lock, during the
creation of a worktree (a driver script planting the SIGKILL in Repo.add_worktree, or in the
checkout that follows its record), during verify, right after one of two tasks finished, and
while two worktree setups run side by side. The time-based points send a real `kill -9` to the
supervisor's pid as `status RUN --json` records it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from support.env import clean_env
from support.processes import assert_gone, marker, task_processes
from support.repo import git, git_run, make_repo, show
from support.sandbox import CLI_POLL, Ran, Sandbox, Spawned, assert_clean
from support.tasks import tasks_toml
from support.waiting import shell_wait_for, wait_for_file, wait_until


def repo_with(tmp_path: Path, tasks: dict[str, dict[str, object]], files: dict[str, str] | None = None,
              **run: object) -> Path:
    """A repository whose first commit holds tasks.toml (`tasks`, [run] settings `run`) and `files`."""
    return make_repo(tmp_path / "repo", {"tasks.toml": tasks_toml(tasks, **run), **(files or {})})


def start_run(box: Sandbox, repo: Path) -> tuple[Spawned, str]:
    """`run tasks.toml --json` in the background in `repo`, and its id once it has started."""
    run = box.spawn("run", repo / "tasks.toml", "--json", cwd=repo)
    return run, run.wait_event(lambda e: e["event"] == "run_started", "the run to start")["run_id"]


def task_states(box: Sandbox, run_id: str) -> dict[str, str]:
    return {t["id"]: t["state"] for t in box.status(run_id)["tasks"]}


def kill_supervisor(box: Sandbox, run: Spawned, run_id: str) -> None:
    """A real `kill -9` of the supervisor whose pid the run's record holds."""
    pid = box.status(run_id)["pid"]
    assert pid == run.pid, (pid, run.pid)  # the process the test started is the supervisor
    os.kill(pid, signal.SIGKILL)
    assert run.proc.wait(10) == -signal.SIGKILL


def counts(path: Path) -> Counter[str]:
    return Counter(path.read_text().split()) if path.exists() else Counter()


def this_runs_locks(box: Sandbox, run_id: str) -> list[dict[str, Any]]:
    ran = box.cli("locks", "--json")
    assert ran.code == 0, ran
    return [r for r in json.loads(ran.out)["locks"] if r.get("run_id") == run_id]


def assert_nothing_left(box: Sandbox, repo: Path, run_id: str, mark: str | None = None) -> None:
    """After the kill: (a) no process of the run within 10 s, (b) no lock of the run held or waited
    for, (c) `git fsck` clean, (d) the checkout clean, (e) the run is `crashed`."""
    if mark is not None:
        assert_gone(mark, timeout=10)
    wait_until(lambda: not task_processes(run_id), "the killed run's processes to be gone", timeout=10)
    wait_until(lambda: not this_runs_locks(box, run_id), "the killed run's locks to be free", timeout=10,
               every=CLI_POLL)
    fsck = git_run(repo, "fsck", "--no-progress")
    assert fsck.returncode == 0, fsck.stderr
    assert_clean(repo)
    status = box.status(run_id)
    assert status["status"] == "crashed", status


def resume_to_the_end(box: Sandbox, repo: Path, run_id: str, expected: dict[str, str]) -> Ran:
    """`resume RUN`: exit 0, main and the checkout hold `expected`, the checkout is clean."""
    resumed = box.cli("resume", run_id, "--json", cwd=repo, timeout=30)
    assert resumed.code == 0, resumed
    for name, text in expected.items():
        assert show(repo, "main", name) == text, (name, resumed)
        assert (repo / name).read_text() == text, name
    assert_clean(repo)
    assert git_run(repo, "fsck", "--no-progress").returncode == 0
    assert box.status(run_id)["status"] == "done"
    return resumed


def waiting_task(tid: str, go: Path, mark: str, counter: Path, started: Path) -> str:
    """A task command carrying `mark`: write tid.txt, say it started, wait until `go` exists (at most
    20 s), then count one finished run of `tid` in `counter`."""
    return (f'echo {tid} > {tid}.txt; touch "{started / tid}"; : {mark}; {shell_wait_for(go, 20)}; '
            f'echo {tid} >> "{counter}"')


# ------------------------------------------------------------------------------- 1. while tasks run

def test_a_sigkill_while_tasks_run(tmp_path: Path, box: Sandbox) -> None:
    mark, go, counter, started = marker(), tmp_path / "go", tmp_path / "counter", tmp_path / "started"
    started.mkdir()
    tasks = {t: {"cmd": waiting_task(t, go, mark, counter, started), "writes": [f"{t}.txt"]} for t in "ab"}
    repo = repo_with(tmp_path, tasks)
    run, run_id = start_run(box, repo)
    wait_for_file(started / "a")
    wait_for_file(started / "b")

    kill_supervisor(box, run, run_id)

    assert_nothing_left(box, repo, run_id, mark)
    go.touch()
    resume_to_the_end(box, repo, run_id, {"a.txt": "a\n", "b.txt": "b\n"})
    assert counts(counter) == {"a": 1, "b": 1}


# ------------------------------------------------------------------------------- 2. waiting on a lock

def test_a_sigkill_while_a_task_waits_on_another_process_lock(tmp_path: Path, box: Sandbox) -> None:
    release = tmp_path / "release"
    repo = repo_with(tmp_path, {"edit": {"cmd": "echo edited > f.txt", "writes": ["f.txt"]}},
                     {"f.txt": "base\n"})
    holder = box.spawn("lock", "f.txt", "--", "sh", "-c", shell_wait_for(release, 20), cwd=repo)

    def held() -> bool:
        ran = box.cli("locks", "--json")
        return any(r["pid"] == holder.pid and r["state"] == "held" for r in json.loads(ran.out)["locks"])

    wait_until(held, "`locks` to show the holder", every=CLI_POLL)
    run, run_id = start_run(box, repo)
    run.wait_event(lambda e: e.get("state") == "waiting", "the task to wait")
    wait_until(lambda: task_states(box, run_id).get("edit") == "waiting", "status to show edit waiting",
               every=CLI_POLL)

    kill_supervisor(box, run, run_id)

    assert_nothing_left(box, repo, run_id)
    assert held()  # the other process's lock is still its own
    release.touch()
    assert holder.finish(timeout=15).code == 0
    resume_to_the_end(box, repo, run_id, {"f.txt": "edited\n"})


# ------------------------------------------------------------------------------- 3. creating a worktree

# Runs the CLI with a SIGKILL planted in the first Repo.add_worktree ("record"), or in the first
# checkout of a new worktree, its record made ("checkout"). Under the __main__ guard:
# multiprocessing's forkserver imports the main module again, where nothing must be patched or run.
KILLING_DRIVER = textwrap.dedent("""\
    import os
    import signal
    import sys


    if __name__ == "__main__":
        import novaproc.isolation.repo as repo
        from novaproc.cli.main import main

        def kill(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)

        in_worktree = repo.Repo.in_worktree

        def checkout_or_kill(self, wt, *args, **kwargs):
            if args[:3] == ("reset", "-q", "--hard"):
                kill()
            return in_worktree(self, wt, *args, **kwargs)

        if os.environ["KILL_AT"] == "record":
            repo.Repo.add_worktree = kill
        else:
            repo.Repo.in_worktree = checkout_or_kill
        sys.exit(main(sys.argv[1:]))
    """)


@pytest.mark.parametrize("point", ["record", "checkout"])
def test_a_sigkill_while_a_worktree_is_created(tmp_path: Path, box: Sandbox, point: str) -> None:
    counter = tmp_path / "counter"
    tasks = {t: {"cmd": f'echo {t} > {t}.txt; echo {t} >> "{counter}"', "writes": [f"{t}.txt"]}
             for t in "ab"}
    repo = repo_with(tmp_path, tasks)
    driver = tmp_path / "driver.py"
    driver.write_text(KILLING_DRIVER)

    proc = subprocess.run([sys.executable, str(driver), "run", str(repo / "tasks.toml"), "--json"],
                          cwd=repo, env=clean_env({**box.env, "KILL_AT": point}), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60, check=False)
    killed = Ran(proc.returncode, proc.stdout, proc.stderr)
    assert killed.code == -signal.SIGKILL, killed
    run_id = killed.run_id

    assert_nothing_left(box, repo, run_id)
    assert counts(counter) == Counter()  # no task ran
    resume_to_the_end(box, repo, run_id, {"a.txt": "a\n", "b.txt": "b\n"})
    assert counts(counter) == {"a": 1, "b": 1}


# ------------------------------------------------------------------------------- 4. during verify

def test_a_sigkill_during_verify(tmp_path: Path, box: Sandbox) -> None:
    mark, began, ok = marker(), tmp_path / "verify-began", tmp_path / "verify-ok"
    counter = tmp_path / "counter"
    tasks = {t: {"cmd": f'echo {t} > {t}.txt; echo {t} >> "{counter}"', "writes": [f"{t}.txt"]}
             for t in "ab"}
    verify = f'touch "{began}"; : {mark}; {shell_wait_for(ok, 20)}; test -e "{ok}"'
    repo = repo_with(tmp_path, tasks, verify=verify)
    run, run_id = start_run(box, repo)
    wait_for_file(began)

    kill_supervisor(box, run, run_id)

    assert_nothing_left(box, repo, run_id, mark)  # the verify command is gone too
    assert show(repo, "main", "a.txt") is None  # nothing landed before verify passed
    ok.touch()
    resume_to_the_end(box, repo, run_id, {"a.txt": "a\n", "b.txt": "b\n"})
    assert counts(counter) == {"a": 1, "b": 1}  # finished tasks are not run again


# ------------------------------------------------------------------------------- 5. one task done

def test_a_sigkill_right_after_one_task_finished(tmp_path: Path, box: Sandbox) -> None:
    mark, go, counter, started = marker(), tmp_path / "go", tmp_path / "counter", tmp_path / "started"
    started.mkdir()
    tasks = {"a": {"cmd": f'echo a > a.txt; echo a >> "{counter}"', "writes": ["a.txt"]},
             "b": {"cmd": waiting_task("b", go, mark, counter, started), "writes": ["b.txt"]}}
    repo = repo_with(tmp_path, tasks)
    run, run_id = start_run(box, repo)
    wait_for_file(started / "b")
    wait_until(lambda: task_states(box, run_id) == {"a": "done", "b": "running"},
               "status to show a done and b running", every=CLI_POLL)

    kill_supervisor(box, run, run_id)

    assert_nothing_left(box, repo, run_id, mark)
    assert task_states(box, run_id)["a"] == "done"  # what finished is kept
    go.touch()
    resume_to_the_end(box, repo, run_id, {"a.txt": "a\n", "b.txt": "b\n"})
    assert counts(counter) == {"a": 1, "b": 1}  # a is not run again
    assert git(repo, "status", "--porcelain") == ""


# ------------------------------------------------------------------------------- 6. setups side by side

def test_a_sigkill_while_worktree_setups_run_side_by_side(tmp_path: Path, box: Sandbox) -> None:
    """Both tasks' worktree_setups run at once, beside the supervisor's loop, when it is killed:
    they die with it, and resume sets both worktrees up again and lands both results."""
    mark, go, setups = marker(), tmp_path / "go", tmp_path / "setups"
    setup = f'echo x >> "{setups}"; if [ ! -e "{go}" ]; then sleep {mark}; fi'
    tasks = {t: {"cmd": f"echo {t} > {t}.txt", "writes": [f"{t}.txt"]} for t in "ab"}
    repo = repo_with(tmp_path, tasks, worktree_setup=setup, max_parallel=2)
    run, run_id = start_run(box, repo)
    wait_until(lambda: setups.exists() and len(setups.read_text().split()) == 2, "both setups under way")

    kill_supervisor(box, run, run_id)

    assert_nothing_left(box, repo, run_id, mark)
    go.touch()
    resume_to_the_end(box, repo, run_id, {"a.txt": "a\n", "b.txt": "b\n"})
