"""Real git repositories in tmp_path: the one builder (make_repo) and git run without any outside
configuration."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

# git must not read the machine's or the user's configuration
GIT_ENV = {"GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"}


def git_env() -> dict[str, str]:
    """os.environ without any GIT_* variable of the caller, plus GIT_ENV."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | GIT_ENV


def git_run(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`git ARGS` in `repo` without any outside configuration; never raises."""
    return subprocess.run(["git", *args], cwd=repo, env=git_env(), capture_output=True, text=True,
                          check=False)


def git(repo: Path, *args: str, check: bool = True, strip: bool = True) -> str:
    """`git ARGS` in `repo`; its stdout, stripped unless `strip` is false. Fails the test when git
    fails, unless `check` is false."""
    proc = git_run(repo, *args)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout.strip() if strip else proc.stdout


def make_repo(path: Path, files: Mapping[str, str] | None = None, *, commit: bool = True) -> Path:
    """A git repository at `path` on branch main, its user set, whose first commit holds `files`
    (with `commit=False`: no commit at all, the files left untracked)."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Test")
    git(path, "config", "user.email", "test@example.com")
    write_files(path, files or {})
    if commit:
        commit_all(path, "initial")
    return path


def write_files(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return rev(repo, "HEAD")


def rev(repo: Path, what: str) -> str:
    return git(repo, "rev-parse", "--verify", "-q", what)


def show(repo: Path, ref: str, path: str) -> str | None:
    """The file `path` at `ref`, or None when it has none."""
    proc = git_run(repo, "show", f"{ref}:{path}")
    return proc.stdout if proc.returncode == 0 else None


def is_ancestor(repo: Path, commit: str, of: str) -> bool:
    return git_run(repo, "merge-base", "--is-ancestor", commit, of).returncode == 0


def nova_branches(repo: Path) -> list[str]:
    return git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/nova/").split()


def worktree_paths(repo: Path) -> list[Path]:
    out = git(repo, "worktree", "list", "--porcelain")
    return [Path(line.split(" ", 1)[1]) for line in out.splitlines() if line.startswith("worktree ")]
