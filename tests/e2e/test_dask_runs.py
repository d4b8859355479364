"""End to end on a Dask cluster (`executor = "dask"`): the real CLI, real git repositories in
tmp_path, and a real cluster of worker processes on 127.0.0.1 started as a user starts one
(`dask scheduler`, `dask worker`). What a task does on the cluster must land as if it ran here;
tasks that must stay on this machine do.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from support.cluster import Cluster
from support.repo import git, make_repo, show
from support.sandbox import Ran, Sandbox, assert_clean, assert_no_leftovers
from support.tasks import tasks_toml
from support.waiting import wait_until

pytestmark = pytest.mark.slow


def on(cluster: Cluster, box: Sandbox) -> Sandbox:
    """`box`, its runs sent to `cluster`."""
    box.env |= {"NOVA_EXECUTOR": "dask", "NOVA_SCHEDULER": cluster.address}
    return box


def errors(ran: Ran) -> dict[str, str]:
    """Why each task that failed did: the CLI's output, cut, rarely shows it."""
    return {t: v["error"] for t, v in ran.summary["tasks"].items() if v["error"]} or {"output": repr(ran)}


MODULE = '''
import os, pathlib

def mark(name, text):
    pathlib.Path(name).write_text(f"{text} in {os.getcwd()}\\n")
    return 42
'''


def test_every_kind_of_task_runs_on_the_cluster_and_lands(tmp_path: Path, box: Sandbox,
                                                            cluster: Cluster) -> None:
    tasks = tasks_toml({
        "shell": {"cmd": 'echo "shell $SECRET in $(pwd)" > sub/shell.txt; echo said-shell',
                  "writes": ["sub/shell.txt"], "env": {"SECRET": "s3"}},
        "argv": {"cmd": ["sh", "-c", "echo argv in $(pwd) > argv.txt"], "writes": ["argv.txt"], "cwd": "."},
        "call": {"call": "tools.mod:mark", "args": ["call.txt", "call"], "writes": ["call.txt"]},
        "after": {"cmd": "cat sub/shell.txt argv.txt call.txt | wc -l > after.txt; rm old.txt",
                  "depends_on": ["shell", "argv", "call"], "writes": ["after.txt", "old.txt"]},
    })
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks, "tools/mod.py": MODULE, "old.txt": "x\n",
                                         "sub/keep": ""})

    ran = on(cluster, box).run(repo / "tasks.toml")

    assert ran.code == 0, errors(ran)
    assert ran.states() == dict.fromkeys(("shell", "argv", "call", "after"), "done")
    clones = str(cluster.clones())
    for name, text in (("sub/shell.txt", "shell s3"), ("argv.txt", "argv"), ("call.txt", "call")):
        landed = show(repo, "main", name)
        assert landed is not None and landed.startswith(text + " in " + clones), landed  # ran there
    assert show(repo, "main", "after.txt").strip() == "3"  # it saw its parents' results
    assert show(repo, "main", "old.txt") is None  # a deletion comes back too
    assert ran.summary["tasks"]["call"]["value"] == 42  # a call's return value came back
    authors = set(git(repo, "log", "--format=%an <%ae>", "main").splitlines())
    assert authors == {"Test <test@example.com>"}  # the worker commits as the user
    assert "said-shell" in box.cli("logs", ran.run_id, "shell").out  # its output came back
    assert_clean(repo)
    assert_no_leftovers(repo, box)
    assert not list(cluster.clones().glob("*/wt-*"))  # nothing stays on the worker


def test_a_pinned_task_and_one_with_absolute_paths_run_on_this_machine(tmp_path: Path, box: Sandbox,
                                                                      cluster: Cluster) -> None:
    outside = tmp_path / "outside.txt"
    tasks = tasks_toml({
        "pinned": {"cmd": "pwd > pinned.txt", "writes": ["pinned.txt"], "executor": "local"},
        "absolute": {"cmd": f"pwd > {outside}", "writes": [str(outside)]},
        "away": {"cmd": "pwd > away.txt", "writes": ["away.txt"]},
    })
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})

    ran = on(cluster, box).run(repo / "tasks.toml")

    assert ran.code == 0, errors(ran)
    assert show(repo, "main", "pinned.txt").startswith(str(box.worktrees))
    assert outside.read_text().startswith(str(box.worktrees))
    assert show(repo, "main", "away.txt").startswith(str(cluster.clones()))


def test_isolation_none_runs_on_a_copy_of_the_checkout_and_brings_the_changes_back(
        tmp_path: Path, box: Sandbox, cluster: Cluster) -> None:
    tasks = tasks_toml({"edit": {"cmd": "cat draft.txt >> notes.txt; pwd > where.txt",
                                 "writes": ["notes.txt", "where.txt"]}}, isolation="none")
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks, "notes.txt": "old\n"})
    (repo / "draft.txt").write_text("draft, not committed\n")  # the task sees the checkout as it is

    ran = on(cluster, box).run(repo / "tasks.toml")

    assert ran.code == 0, errors(ran)
    assert (repo / "notes.txt").read_text() == "old\ndraft, not committed\n"
    assert (repo / "where.txt").read_text().startswith(str(cluster.clones()))
    assert git(repo, "rev-list", "--count", "main") == "1"  # in place: nothing is committed


def test_setup_and_included_files_are_made_on_the_worker_and_do_not_land(tmp_path: Path, box: Sandbox,
                                                                       cluster: Cluster) -> None:
    tasks = tasks_toml({"use": {"cmd": "cat vendor/lib.txt made.txt > out.txt", "writes": ["out.txt"]}},
                       worktree_setup="pwd > made.txt", worktree_include=["vendor"])
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks, ".gitignore": "vendor/\n"})
    (repo / "vendor").mkdir()
    (repo / "vendor" / "lib.txt").write_text("vendored\n")

    ran = on(cluster, box).run(repo / "tasks.toml")

    assert ran.code == 0, errors(ran)
    lines = show(repo, "main", "out.txt").splitlines()
    assert lines[0] == "vendored" and lines[1].startswith(str(cluster.clones()))
    tree = git(repo, "ls-tree", "-r", "--name-only", "main").splitlines()
    assert "made.txt" not in tree and "vendor/lib.txt" not in tree


def test_output_reaches_the_task_log_while_the_task_runs(tmp_path: Path, box: Sandbox,
                                                         cluster: Cluster) -> None:
    gate = tmp_path / "gate"
    waits = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    tasks = tasks_toml({"talk": {"cmd": f"echo first; {waits}; echo second"}})
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})
    run = on(cluster, box).spawn("run", repo / "tasks.toml", "--json", cwd=repo)
    run_id = run.wait_event(lambda e: e["event"] == "run_started", "the run's start")["run_id"]

    wait_until(lambda: "first" in box.cli("logs", run_id, "talk").out, "the first line in the log", 30)
    assert run.proc.poll() is None  # still running: it came while the task ran
    gate.touch()

    assert run.finish().code == 0
    assert box.cli("logs", run_id, "talk").out.split() == ["first", "second"]


def test_a_task_that_times_out_on_the_cluster_ends_with_its_whole_tree(tmp_path: Path, box: Sandbox,
                                                                       cluster: Cluster) -> None:
    from support.processes import assert_gone, marker

    mark = marker()
    tasks = tasks_toml({"stuck": {"cmd": f"trap '' TERM; (setsid sleep {mark} &); sleep {mark}",
                                  "timeout": "1s"}})
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})
    start = time.monotonic()

    ran = on(cluster, box).run(repo / "tasks.toml")

    assert ran.code == 1, ran
    assert "timed out" in ran.summary["tasks"]["stuck"]["error"]
    assert time.monotonic() - start < 30
    assert_gone(mark, timeout=1 + 2)  # kill_grace (1 s) + 2 s


def test_a_scheduler_out_of_reach_is_said_with_its_address_and_nothing_runs(tmp_path: Path,
                                                                           box: Sandbox) -> None:
    pytest.importorskip("distributed")
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks_toml({"t": {"cmd": "touch ran"}})})
    box.env |= {"NOVA_EXECUTOR": "dask", "NOVA_SCHEDULER": "tcp://127.0.0.1:9"}

    ran = box.cli("run", "tasks.toml", cwd=repo)

    assert ran.code == 1, ran
    assert "tcp://127.0.0.1:9" in ran.err and "Traceback" not in ran.err
    assert not (repo / "ran").exists()
    assert box.cli("status", "--json", cwd=repo).out.strip() in ("[]", "")  # no run left behind


@pytest.mark.parametrize(("env", "says"), [
    ({"NOVA_EXECUTOR": "daks"}, "executor"),
    ({"NOVA_EXECUTOR": "dask"}, "needs a scheduler"),
    ({"NOVA_EXECUTOR": "dask", "NOVA_SCHEDULER": "local:0"}, "not a Dask scheduler address"),
    ({"NOVA_EXECUTOR": "dask", "NOVA_SCHEDULER": "tcp://x y"}, "not a Dask scheduler address"),
])
def test_bad_cluster_settings_are_exit_2_before_anything_runs(tmp_path: Path, box: Sandbox,
                                                              env: dict[str, str], says: str) -> None:
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks_toml({"t": {"cmd": "touch ran"}})})
    box.env |= env

    ran = box.cli("run", "tasks.toml", cwd=repo)

    assert ran.code == 2, ran
    assert says in ran.err and "Traceback" not in ran.err
    assert not (repo / "ran").exists()


def test_a_cluster_run_needs_a_git_repository(tmp_path: Path, box: Sandbox) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "tasks.toml").write_text(tasks_toml({"t": {"cmd": "touch ran"}}))
    box.env |= {"NOVA_EXECUTOR": "dask", "NOVA_SCHEDULER": "local:1"}

    ran = box.cli("run", "tasks.toml", cwd=folder)

    assert ran.code == 2, ran
    assert "not in a git repository" in ran.err
    assert not (folder / "ran").exists()


def test_a_local_cluster_of_n_workers_is_started_for_the_run(tmp_path: Path, box: Sandbox) -> None:
    pytest.importorskip("distributed")
    tasks = tasks_toml({f"t{i}": {"cmd": f"echo {i} > t{i}.txt", "writes": [f"t{i}.txt"]} for i in range(3)},
                       executor="dask", scheduler="local:2")
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})

    ran = box.run(repo / "tasks.toml")

    assert ran.code == 0, errors(ran)
    assert [show(repo, "main", f"t{i}.txt") for i in range(3)] == ["0\n", "1\n", "2\n"]
    assert "Traceback" not in ran.err and ran.err.strip() == "", ran.err


def test_a_task_with_an_unknown_executor_is_exit_2_naming_it(tmp_path: Path, box: Sandbox) -> None:
    tasks = tasks_toml({"t": {"cmd": "touch ran", "executor": "far"}})
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})

    ran = box.cli("run", "tasks.toml", cwd=repo)

    assert ran.code == 2, ran
    assert "'t'" in ran.err and "executor" in ran.err and "Traceback" not in ran.err
    assert not (repo / "ran").exists()


def test_a_failed_task_leaves_what_it_wrote_in_the_worktree_kept_for_inspection(
        tmp_path: Path, box: Sandbox, cluster: Cluster) -> None:
    tasks = tasks_toml({"broken": {"cmd": "echo half > half.txt; echo more >> README; exit 3",
                                   "writes": ["half.txt", "README"]}})
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks, "README": "read me\n"})

    ran = on(cluster, box).run(repo / "tasks.toml")

    assert ran.code == 1, ran
    kept = box.worktrees.resolve() / f"{ran.run_id}-broken"
    assert str(kept) in ran.notes
    assert (kept / "half.txt").read_text() == "half\n"
    assert (kept / "README").read_text() == "read me\nmore\n"
    assert git(kept, "status", "--porcelain", strip=False).splitlines() == [" M README", "?? half.txt"]
    assert show(repo, "main", "half.txt") is None  # nothing of it landed


def test_plan_says_where_tasks_run(tmp_path: Path, box: Sandbox) -> None:
    tasks = tasks_toml({"away": {"cmd": "true"}, "pinned": {"cmd": "true", "executor": "local"},
                        "machine": {"cmd": "true", "writes": [str(tmp_path / "lock")]}},
                       executor="dask", scheduler="tcp://127.0.0.1:9")
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})

    text = box.cli("plan", "tasks.toml", cwd=repo)
    as_json = box.cli("plan", "tasks.toml", "--json", cwd=repo)

    assert text.code == 0 and as_json.code == 0, (text, as_json)  # planning reaches no scheduler
    assert "Executor: dask at tcp://127.0.0.1:9; 2 task(s) stay on this machine: pinned, machine" in text.out
    where = json.loads(as_json.out)
    assert (where["executor"], where["scheduler"], where["here"]) == ("dask", "tcp://127.0.0.1:9",
                                                                      ["pinned", "machine"])
    box.env["NOVA_EXECUTOR"] = "local"
    assert "Executor:" not in box.cli("plan", "tasks.toml", cwd=repo).out


def test_what_a_task_printed_before_its_process_on_the_worker_died_reaches_its_log(
        tmp_path: Path, box: Sandbox, cluster: Cluster) -> None:
    """The task kills the novaproc process that runs it on the worker at once, before its output
    would have been given its log's name there: it comes back all the same."""
    tasks = tasks_toml({"doomed": {"cmd": "echo last words; kill -9 $PPID; sleep 5", "writes": ["x"]}})
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})

    ran = on(cluster, box).run(repo / "tasks.toml")

    assert ran.code == 1, ran
    assert "died" in errors(ran)["doomed"], errors(ran)
    assert "last words" in box.cli("logs", ran.run_id, "doomed").out
