"""`history`: what lands is the same tree whatever its shape; merge keeps a merge commit a
result, linear one plain commit a task, squash one commit for the run, listing its tasks."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.repo import commit_all, git, is_ancestor, make_repo, rev, show, write_files
from support.sandbox import Sandbox, assert_clean
from support.tasks import tasks_toml
from support.waiting import shell_wait_for, wait_for_file

TASKS = {
    "one": {"cmd": "echo one > one.txt", "writes": ["one.txt"]},
    "two": {"cmd": "echo two > two.txt", "writes": ["two.txt"]},
    "after": {"cmd": "cat one.txt two.txt > both.txt", "writes": ["both.txt"], "depends_on": ["one", "two"]},
    "appends_a": {"cmd": "echo a >> log.txt"},  # undeclared, conflicting: run again on the merged result
    "appends_b": {"cmd": "echo b >> log.txt"},
}


def _users_commit(repo: Path) -> str:
    """A commit of the user's on main while the run goes on; its id."""
    write_files(repo, {"user.txt": "mine\n"})
    return commit_all(repo, "the user's commit")


def _land(tmp_path: Path, box: Sandbox, history: str) -> tuple[Path, str]:
    repo = make_repo(tmp_path / history, {"tasks.toml": tasks_toml(TASKS, history=history),
                                          "log.txt": "start\n"})
    start = rev(repo, "main")
    ran = box.run(repo / "tasks.toml")
    assert ran.code == 0, ran
    assert_clean(repo)
    return repo, start


def test_every_history_lands_the_same_tree(tmp_path: Path, box: Sandbox) -> None:
    trees = {}
    for history in ("merge", "linear", "squash"):
        repo, _ = _land(tmp_path, box, history)
        trees[history] = {f: show(repo, "main", f) for f in ("one.txt", "two.txt", "both.txt")}
        assert sorted((show(repo, "main", "log.txt") or "").split()) == ["a", "b", "start"]
    assert trees["merge"] == trees["linear"] == trees["squash"]
    assert trees["merge"]["both.txt"] == "one\ntwo\n"


def test_linear_history_has_a_commit_a_task_and_no_merge(tmp_path: Path, box: Sandbox) -> None:
    repo, start = _land(tmp_path, box, "linear")
    commits = git(repo, "rev-list", f"{start}..main").split()
    assert git(repo, "rev-list", "--merges", f"{start}..main") == ""
    assert len(commits) == len(TASKS)
    subjects = git(repo, "log", "--format=%s", f"{start}..main").splitlines()
    assert {s.split(" ")[0] for s in subjects} == set(TASKS)


def test_squash_history_is_one_commit_listing_the_tasks(tmp_path: Path, box: Sandbox) -> None:
    repo, start = _land(tmp_path, box, "squash")
    assert git(repo, "rev-list", f"{start}..main").split() == [rev(repo, "main")]
    assert git(repo, "rev-parse", "main^") == start
    message = git(repo, "log", "-1", "--format=%B", "main")
    assert all(f"- {task}" in message for task in TASKS)


@pytest.mark.parametrize("history", ["linear", "squash"])
def test_a_target_moved_during_the_run_keeps_its_commit(tmp_path: Path, box: Sandbox, history: str) -> None:
    started, go = tmp_path / "started", tmp_path / "go"
    tasks = tasks_toml({"slow": {"cmd": f"touch {started}; {shell_wait_for(go)}; echo slow > slow.txt",
                                 "writes": ["slow.txt"]}}, history=history)
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})
    run = box.spawn("run", repo / "tasks.toml", "--json", cwd=repo)
    wait_for_file(started)
    mine = _users_commit(repo)
    go.touch()

    assert run.finish().code == 0
    assert is_ancestor(repo, mine, "main")
    assert show(repo, "main", "slow.txt") == "slow\n" and show(repo, "main", "user.txt") == "mine\n"
    assert_clean(repo)


@pytest.mark.parametrize("history", ["linear", "squash"])
def test_a_dirty_checkout_stops_only_what_it_would_overwrite(tmp_path: Path, box: Sandbox,
                                                            history: str) -> None:
    tasks = tasks_toml({"one": {"cmd": "echo one > one.txt", "writes": ["one.txt"]}}, history=history)
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks, "one.txt": "old\n", "other.txt": "x\n"})
    (repo / "other.txt").write_text("my edit\n")  # untouched by the result: it lands
    assert box.run(repo / "tasks.toml").code == 0
    assert show(repo, "main", "one.txt") == "one\n" and (repo / "other.txt").read_text() == "my edit\n"

    (repo / "one.txt").write_text("my other edit\n")  # the result would overwrite it: it waits
    tasks = tasks_toml({"one": {"cmd": "echo two > one.txt", "writes": ["one.txt"]}}, history=history)
    (repo / "tasks.toml").write_text(tasks)
    ran = box.run(repo / "tasks.toml")
    assert ran.code == 3, ran
    assert (repo / "one.txt").read_text() == "my other edit\n" and show(repo, "main", "one.txt") == "one\n"


def test_the_landed_commit_is_the_targets_tip_when_it_moved_during_verify(tmp_path: Path,
                                                                         box: Sandbox) -> None:
    verifying, go = tmp_path / "verifying", tmp_path / "go"
    tasks = tasks_toml({"one": {"cmd": "echo one > one.txt", "writes": ["one.txt"]}},
                       verify=f"touch {verifying}; {shell_wait_for(go)}")
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})
    run = box.spawn("run", repo / "tasks.toml", "--json", cwd=repo)
    wait_for_file(verifying)
    _users_commit(repo)
    go.touch()

    ran = run.finish()
    assert ran.code == 0, ran
    assert ran.event("merge")["commit"] == rev(repo, "main")  # what status and the summary name
    assert show(repo, "main", "one.txt") == "one\n" and show(repo, "main", "user.txt") == "mine\n"
