"""What a task's worktree holds beyond tracked files, as the user's checkout has it.

Submodules: those the checkout has initialised are there, from the user's own objects (the
submodule's origin is gone: nothing is fetched); a task's writes inside one land as a new
submodule commit; nothing is left behind. LFS: files whose objects are stored locally have their
content, the others stay pointers (a clone made with GIT_LFS_SKIP_SMUDGE), and no run fails for it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from support.cli import run_cli
from support.repo import commit_all, git, git_env, make_repo, show
from support.tasks import NO_THROTTLE, run_table, task


def _superproject(tmp_path: Path) -> tuple[Path, Path]:
    """A repository with submodule `lib` initialised and `docs` declared but not initialised;
    both origins removed afterwards."""
    lib = make_repo(tmp_path / "lib-origin", {"lib.txt": "v1\n"})
    docs = make_repo(tmp_path / "docs-origin", {"index.md": "docs\n"})
    repo = make_repo(tmp_path / "repo", {"main.txt": "m\n"})
    for origin, path in ((lib, "lib"), (docs, "docs")):
        git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(origin), path)
    commit_all(repo, "submodules")
    git(repo, "submodule", "deinit", "-q", "-f", "docs")
    shutil.rmtree(repo / ".git" / "modules" / "docs")
    shutil.rmtree(lib)
    shutil.rmtree(docs)
    return repo, tmp_path / "worktrees"


def _run(repo: Path, worktrees: Path, body: str, *args: str, verify: str = "test -f lib/lib.txt"):
    (repo / "tasks.toml").write_text(run_table(**NO_THROTTLE, worktree_dir=str(worktrees),
                                               verify=verify) + body)
    commit_all(repo, "tasks")
    return run_cli("run", "-q", *args, "tasks.toml", cwd=repo)


def test_a_task_sees_initialised_submodules_and_not_the_others(tmp_path: Path) -> None:
    repo, worktrees = _superproject(tmp_path)
    result = _run(repo, worktrees, task("copy", "cat lib/lib.txt > copy.txt; ls -A docs > docs.txt",
                                        writes=["copy.txt", "docs.txt"]))
    assert result.returncode == 0, result.stderr
    assert show(repo, "main", "copy.txt") == "v1\n"
    assert show(repo, "main", "docs.txt") == ""  # empty there, as in the user's checkout


def test_writes_inside_a_submodule_land_as_a_new_submodule_commit(tmp_path: Path) -> None:
    repo, worktrees = _superproject(tmp_path)
    before = git(repo, "rev-parse", "main:lib")
    result = _run(repo, worktrees, task("edit", "echo v2 >> lib/lib.txt", writes=["lib"]))
    assert result.returncode == 0, result.stderr
    after = git(repo, "rev-parse", "main:lib")
    assert after != before
    # the new commit is in the user's module repository: `git submodule update` needs no fetch
    assert git(repo / "lib", "show", f"{after}:lib.txt") == "v1\nv2"
    assert git(repo / "lib", "rev-parse", f"{after}^") == before


def test_pooled_worktrees_with_submodules_are_reused_and_nothing_is_left(tmp_path: Path) -> None:
    repo, worktrees = _superproject(tmp_path)
    body = "".join(task(f"t{i}", f"cat lib/lib.txt > out{i}.txt", writes=[f"out{i}.txt"])
                   for i in range(4))
    result = _run(repo, worktrees, body, "-j", "1")  # one worktree, moved from task to task
    assert result.returncode == 0, result.stderr
    assert [show(repo, "main", f"out{i}.txt") for i in range(4)] == ["v1\n"] * 4
    module_worktrees = git(repo / ".git" / "modules" / "lib", "worktree", "list", "--porcelain")
    assert module_worktrees.count("worktree ") == 1  # only the user's own checkout of lib
    assert not list(worktrees.iterdir())
    assert git(repo, "status", "--porcelain") == ""


needs_lfs = pytest.mark.skipif(shutil.which("git-lfs") is None, reason="git-lfs is not installed")
_LFS_TASKS = task("read", "cat a.bin > copy.txt", writes=["copy.txt"]) + \
    task("write", "echo new > b.bin", writes=["b.bin"])


def _lfs_repo(path: Path) -> Path:
    repo = make_repo(path, {"t.txt": "t\n"})
    git(repo, "lfs", "install", "--local")
    git(repo, "lfs", "track", "*.bin")
    (repo / "a.bin").write_text("big data\n")
    commit_all(repo, "lfs")
    return repo


@needs_lfs
def test_lfs_files_with_local_objects_have_their_content(tmp_path: Path) -> None:
    repo = _lfs_repo(tmp_path / "repo")
    result = _run(repo, tmp_path / "worktrees", _LFS_TASKS, verify="grep -q big a.bin")
    assert result.returncode == 0, result.stderr
    assert show(repo, "main", "copy.txt") == "big data\n"
    assert "git-lfs" in (show(repo, "main", "b.bin") or "")  # stored as a pointer
    assert (repo / "b.bin").read_text() == "new\n"  # and smudged in the user's checkout


@needs_lfs
def test_a_clone_without_lfs_objects_runs_with_pointers(tmp_path: Path) -> None:
    origin = _lfs_repo(tmp_path / "origin")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "-b", "main", str(origin), str(clone)], check=True,
                   env=git_env() | {"GIT_LFS_SKIP_SMUDGE": "1"})
    git(clone, "lfs", "install", "--local")
    for key, value in (("user.name", "Test"), ("user.email", "test@example.com")):
        git(clone, "config", key, value)
    shutil.rmtree(origin)  # nothing to download from
    result = _run(clone, tmp_path / "worktrees", _LFS_TASKS, verify="grep -q git-lfs a.bin")
    assert result.returncode == 0, result.stderr
    assert (show(clone, "main", "copy.txt") or "").startswith("version https://git-lfs")


def test_a_program_only_the_checkout_has_is_named_with_worktree_include(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {".gitignore": "tools/\n"})
    (repo / "tools").mkdir()
    (repo / "tools" / "gen").write_text("#!/bin/sh\necho generated\n")
    (repo / "tools" / "gen").chmod(0o755)
    body = task("gen", "./tools/gen > gen.txt", writes=["gen.txt"])

    failed = _run(repo, tmp_path / "worktrees", body, verify="true")
    assert failed.returncode == 1
    assert 'worktree_include = ["tools"]' in failed.stderr and "./tools/gen" in failed.stderr

    (repo / "tasks.toml").write_text(run_table(**NO_THROTTLE, worktree_dir=str(tmp_path / "worktrees"),
                                               worktree_include=["tools"]) + body)
    commit_all(repo, "include tools")
    ran = run_cli("run", "-q", "tasks.toml", cwd=repo)
    assert ran.returncode == 0, ran.stderr
    assert show(repo, "main", "gen.txt") == "generated\n"


def test_a_task_rewriting_gitmodules_cannot_reach_the_users_checkout(tmp_path: Path) -> None:
    repo, worktrees = _superproject(tmp_path)
    (repo / "lib" / "lib.txt").write_text("my uncommitted edit\n")
    mine = git(repo / "lib", "rev-parse", "HEAD")
    evil = (f"ln -s {repo} esc && git config -f .gitmodules submodule.lib.path esc/lib "
            "&& echo evil > esc/lib/evil.txt; echo done > out.txt")
    _run(repo, worktrees, task("evil", evil, writes=["out.txt", ".gitmodules", "esc"]))
    # what the task wrote through its symlink is its own doing; novaproc commits and removes nothing
    assert git(repo / "lib", "rev-parse", "HEAD") == mine  # nothing committed in the user's module
    assert (repo / "lib" / "lib.txt").read_text() == "my uncommitted edit\n"  # nor emptied
