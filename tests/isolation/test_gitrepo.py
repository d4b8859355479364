"""The git adapter on real repositories: readiness, merges without a checkout, compare-and-swap
refs, the per-repository lock, included files, the worktree folder checks."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from support.repo import commit_all, git, make_repo, write_files

from novaproc.errors import EnvironmentFault, UsageError
from novaproc.isolation.furnish import SetupFailed, bring_in, ensure_private_dir, run_setup
from novaproc.isolation.preflight import preflight
from novaproc.isolation.repo import Repo, admin_dir

pytestmark = pytest.mark.usefixtures("isolated_git")


def commit_file(root: Path, name: str, text: str, message: str = "edit") -> str:
    write_files(root, {name: text})
    return commit_all(root, message)


@pytest.fixture
def repo(git_repo: Callable[..., Path]) -> Path:
    return git_repo({"a.txt": "a\n"})


def test_preflight_reports_branch_base_target_and_what_is_uncommitted(repo: Path) -> None:
    (repo / "new.txt").write_text("n")
    checked = preflight(repo, target=None, merge="auto")
    assert (checked.branch, checked.target, checked.root) == ("main", "main", repo)
    assert checked.base == git(repo, "rev-parse", "HEAD")
    assert checked.repo.common_dir == repo / ".git"
    assert checked.dirty == ("new.txt",) and "1 uncommitted change(s)" in checked.dirty_note()[0]


def test_preflight_takes_the_target_tip_as_base_and_refuses_a_missing_target(repo: Path) -> None:
    git(repo, "branch", "release")
    commit_file(repo, "a.txt", "later\n")
    checked = preflight(repo, target="release", merge="auto")
    assert (checked.target, checked.base) == ("release", git(repo, "rev-parse", "release"))
    with pytest.raises(UsageError, match="'nope' is not a branch"):
        preflight(repo, target="nope", merge="auto")
    git(repo, "checkout", "-q", "--detach")
    with pytest.raises(UsageError, match="HEAD is detached"):
        preflight(repo, target=None, merge="auto")
    assert preflight(repo, target=None, merge="off").target is None


def test_preflight_refuses_a_merge_in_progress(repo: Path) -> None:
    git(repo, "checkout", "-qb", "other")
    commit_file(repo, "a.txt", "other\n")
    git(repo, "checkout", "-q", "main")
    commit_file(repo, "a.txt", "main\n")
    subprocess.run(["git", "merge", "other"], cwd=repo, capture_output=True, check=False)
    with pytest.raises(UsageError, match=r"middle of a merge.*merge --abort"):
        preflight(repo, target=None, merge="auto")


def test_preflight_refuses_a_rebase_and_an_empty_repository(repo: Path, tmp_path: Path) -> None:
    (repo / ".git" / "rebase-merge").mkdir()
    with pytest.raises(UsageError, match="rebase"):
        preflight(repo, target=None, merge="auto")
    empty = make_repo(tmp_path / "empty", commit=False)
    with pytest.raises(UsageError, match="no commit yet"):
        preflight(empty, target=None, merge="auto")
    with pytest.raises(UsageError, match="not usable as a git repository"):
        preflight(tmp_path / "nowhere", target=None, merge="auto")


def test_admin_dir_is_read_from_the_checkout_without_git(repo: Path, tmp_path: Path) -> None:
    assert admin_dir(repo) == repo / ".git"
    git(repo, "worktree", "add", "-q", str(tmp_path / "linked"))
    assert admin_dir(tmp_path / "linked") == repo / ".git" / "worktrees" / "linked"


def test_merge_without_checkout(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    left = commit_file(repo, "left.txt", "l\n")
    git(repo, "reset", "-q", "--hard", base)
    right = commit_file(repo, "right.txt", "r\n")
    git(repo, "reset", "-q", "--hard", base)
    r = Repo(repo)
    assert r.merge(left, base, "m").how == "contained"
    assert r.merge(base, left, "m").commit == left
    merged = r.merge(left, right, "m")
    assert merged.how == "merge"
    names = set(git(repo, "ls-tree", "--name-only", merged.commit).split())
    assert names == {"a.txt", "left.txt", "right.txt"}
    assert git(repo, "rev-parse", "HEAD") == base  # nothing checked out
    clash = commit_file(repo, "left.txt", "other\n")
    conflict = r.merge(left, clash, "m")
    assert conflict.commit is None and conflict.conflicts == ("left.txt",)


def test_set_ref_is_compare_and_swap(repo: Path) -> None:
    r = Repo(repo)
    first = git(repo, "rev-parse", "HEAD")
    second = commit_file(repo, "b.txt", "b\n")
    assert r.set_ref("refs/heads/x", first)
    assert not r.set_ref("refs/heads/x", second, second)  # x is not at `second`
    assert r.rev("refs/heads/x") == first
    assert r.set_ref("refs/heads/x", second, first)
    assert r.rev("refs/heads/x") == second


def test_failed_git_command_is_an_environment_fault(repo: Path) -> None:
    with pytest.raises(EnvironmentFault, match=r"git cat-file .*failed .*exit 128"):
        Repo(repo).git("cat-file", "-p", "nonexistent")


def test_add_worktree_recovers_from_a_stale_record_and_an_existing_branch(repo: Path, tmp_path: Path) -> None:
    r = Repo(repo)
    head = git(repo, "rev-parse", "HEAD")
    path = tmp_path / "wt" / "run-task"
    first = r.add_worktree(path, head, "nova/run/task")
    subprocess.run(["rm", "-rf", str(path)], check=True)  # a crash left the record, not the folder
    (first.admin / "half-written").mkdir()
    again = r.add_worktree(path, head, "nova/run/task")  # same branch again: reset, not refused
    assert (again.path / "a.txt").read_text() == "a\n"
    assert git(again.path, "symbolic-ref", "--short", "HEAD") == "nova/run/task"
    r.remove_worktree(path)
    assert git(repo, "worktree", "list").count("\n") == 0


def test_worktree_lock_is_exclusive_across_open_files(repo: Path) -> None:
    got = threading.Event()

    def contender() -> None:
        with Repo(repo).worktree_lock():
            got.set()

    with Repo(repo).worktree_lock():
        thread = threading.Thread(target=contender)
        thread.start()
        assert not got.wait(0.2)
    thread.join(5)
    assert got.is_set()


def test_live_runs_follow_the_holder(repo: Path) -> None:
    r = Repo(repo)
    with r.hold_run("run1"):
        assert Repo(repo).live_runs() == {"run1"}
    assert r.live_runs() == set()
    assert not (repo / ".git" / "nova-runs" / "run1.lock").exists()


def test_bring_in_copies_files_links_folders_and_skips_tracked(repo: Path, tmp_path: Path) -> None:
    (repo / ".env").write_text("SECRET=1\n")
    (repo / "node_modules" / "x").mkdir(parents=True)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "a.txt").write_text("tracked version\n")
    brought = bring_in(repo, dest, (".env", "node_modules", "a.txt", "missing", ".git"))
    assert brought == (".env", "node_modules")
    assert (dest / ".env").read_text() == "SECRET=1\n" and not (dest / ".env").is_symlink()
    assert (dest / "node_modules").is_symlink() and (dest / "node_modules" / "x").is_dir()
    assert (dest / "a.txt").read_text() == "tracked version\n"


def test_run_setup_failure_says_what_failed(tmp_path: Path) -> None:
    run_setup(tmp_path, "echo ok > made")
    assert (tmp_path / "made").exists()
    with pytest.raises(SetupFailed, match=r"exit 3.*boom"):
        run_setup(tmp_path, "echo boom; exit 3")


def test_worktree_dir_is_private(tmp_path: Path) -> None:
    made = ensure_private_dir(tmp_path / "a" / "wt")
    assert made.is_dir() and (made.stat().st_mode & 0o777) == 0o700
    (tmp_path / "link").symlink_to(made)
    with pytest.raises(EnvironmentFault, match="symbolic link"):
        ensure_private_dir(tmp_path / "link")
    (tmp_path / "file").write_text("")
    with pytest.raises(EnvironmentFault, match="not a folder"):
        ensure_private_dir(tmp_path / "file")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a folder to another user")
def test_worktree_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "theirs"
    other.mkdir()
    os.chown(other, 65534, 65534)
    with pytest.raises(EnvironmentFault, match="another user"):
        ensure_private_dir(other)
