"""Faults of a run on a Dask cluster, end to end: a SIGKILLed or interrupted supervisor, a
SIGKILLed Dask worker, and a resume on the same cluster. A task's processes are found by a
unique marker; whatever stops the run, nothing of the task may go on running on the worker.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest
from support.cluster import Cluster
from support.processes import assert_gone, marker, marker_procs, sleepers
from support.repo import make_repo, show
from support.sandbox import Sandbox, Spawned
from support.tasks import tasks_toml
from support.waiting import wait_until

pytestmark = pytest.mark.slow
GRACE = 1  # kill_grace in these tasks files (NO_THROTTLE): the tree must be gone within GRACE + 2 s


def start(box: Sandbox, cluster: Cluster, repo: Path) -> tuple[Spawned, str]:
    box.env |= {"NOVA_EXECUTOR": "dask", "NOVA_SCHEDULER": cluster.address}
    run = box.spawn("run", repo / "tasks.toml", "--json", cwd=repo)
    return run, run.wait_event(lambda e: e["event"] == "run_started", "the run's start")["run_id"]


def stubborn(mark: str) -> str:
    """A task that ignores SIGTERM and leaves a child of its own session behind."""
    return f"trap '' TERM; (setsid sleep {mark} &); sleep {mark}"


def running(mark: str, count: int = 2) -> list[psutil.Process]:
    return wait_until(lambda: len(found := sleepers(mark)) >= count and found, "the task's processes", 30)


def start_stubborn(tmp_path: Path, box: Sandbox, cluster: Cluster) -> tuple[Spawned, str, str]:
    """A run of one stubborn task on the cluster, once its processes run there; and its marker."""
    mark = marker()
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks_toml({"stuck": {"cmd": stubborn(mark)}})})
    run, run_id = start(box, cluster, repo)
    running(mark)
    return run, run_id, mark


def test_a_sigkilled_supervisor_ends_the_task_on_the_worker(tmp_path: Path, box: Sandbox,
                                                            cluster: Cluster) -> None:
    run, _, mark = start_stubborn(tmp_path, box, cluster)

    os.kill(run.pid, signal.SIGKILL)

    assert_gone(mark, timeout=GRACE + 2)


def test_ctrl_c_cancels_the_run_and_ends_the_task_on_the_worker(tmp_path: Path, box: Sandbox,
                                                               cluster: Cluster) -> None:
    run, run_id, mark = start_stubborn(tmp_path, box, cluster)

    os.kill(run.pid, signal.SIGINT)

    ran = run.finish(30)
    assert ran.code == 130, ran
    assert_gone(mark, timeout=GRACE + 2)
    assert box.status(run_id)["status"] == "cancelled"


def test_a_killed_worker_fails_the_attempt_it_held_and_the_retry_lands_once(tmp_path: Path, box: Sandbox,
                                                                            cluster: Cluster) -> None:
    mark = marker()
    first_waits = f'if [ "$NOVA_ATTEMPT" = 1 ]; then sleep {mark}; fi; echo "$NOVA_ATTEMPT" >> attempts.txt'
    tasks = tasks_toml({"t": {"cmd": first_waits, "writes": ["attempts.txt"], "retries": 1}})
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})
    run, _ = start(box, cluster, repo)
    sleep = running(mark, 1)[0]
    holder = next(p for p in sleep.parents() if "spawn_main" in " ".join(p.cmdline()))  # its Dask worker
    dead = holder.pid

    holder.kill()

    ran = run.finish(60)
    assert ran.code == 0, ran
    assert ran.summary["tasks"]["t"]["attempts"] == 2
    retried = [e["reason"] for e in ran.events if e.get("task") == "t" and e.get("state") == "waiting"]
    assert len(retried) == 1 and "its Dask worker" in retried[0] and "died" in retried[0], retried
    assert show(repo, "main", "attempts.txt") == "2\n"  # the first attempt never lands, nor runs twice
    assert_gone(mark, timeout=GRACE + 2)
    assert not list(cluster.clones().glob(f"*/wt-{dead}-*"))  # its worktree was swept


def test_resume_on_the_same_cluster_keeps_what_was_done(tmp_path: Path, box: Sandbox,
                                                       cluster: Cluster) -> None:
    mark, gate = marker(), tmp_path / "gate"
    tasks = tasks_toml({
        "quick": {"cmd": "echo quick > quick.txt", "writes": ["quick.txt"]},
        "slow": {"cmd": f"echo slow > slow.txt; : {mark}; while [ ! -e {gate} ]; do sleep 0.05; done",
                 "writes": ["slow.txt"]},
    })
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})
    run, run_id = start(box, cluster, repo)
    run.wait_event(lambda e: e.get("task") == "quick" and e.get("state") == "done", "quick done")
    wait_until(lambda: marker_procs(mark), "slow running", 30)

    os.kill(run.pid, signal.SIGKILL)
    run.finish(10)
    gate.touch()
    resumed = box.cli("resume", run_id, "--json", cwd=repo, timeout=60)

    assert resumed.code == 0, resumed
    assert resumed.summary["tasks"]["quick"]["attempts"] == 1  # kept, not run again
    assert show(repo, "main", "quick.txt") == "quick\n" and show(repo, "main", "slow.txt") == "slow\n"
