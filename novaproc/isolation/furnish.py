"""What a new worktree (a task's, or verify's) gets besides its checkout: a private folder
to live in, the included untracked files, and the `worktree_setup` command run in it."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from novaproc.errors import EnvironmentFault, NovaError
from novaproc.execution.guard import UNSTOPPED, Ending, run_guarded
from novaproc.fsio import open_private, private_dir


class SetupFailed(NovaError):
    """The user's `worktree_setup` command failed; fix it or run it by hand in the worktree."""


def bring_in(root: Path, dest: Path, include: Sequence[str]) -> tuple[str, ...]:
    """Copy included files (and link included folders) from `root` into the worktree `dest`.

    Paths the worktree already has (tracked ones) are left alone. Returns what was brought in.
    """
    brought: list[str] = []
    for src, rel in included(root, include):
        target = dest / rel
        if target.exists() or target.is_symlink():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir() and not src.is_symlink():
            target.symlink_to(src.resolve(), target_is_directory=True)
        else:
            shutil.copy2(src, target, follow_symlinks=False)
        brought.append(rel)
    return tuple(brought)


def included(root: Path, include: Sequence[str]) -> Iterator[tuple[Path, str]]:
    """What worktree_include names in the checkout at `root`: (path, path relative to root), never
    inside .git."""
    for pattern in include:
        for src in sorted(root.glob(pattern.strip("/"))) if pattern.strip("/") else ():
            rel = src.relative_to(root).as_posix()
            if rel.split("/")[0] != ".git":
                yield src, rel


def run_setup(where: Path, command: str, ending: Ending = UNSTOPPED, log: Path | None = None) -> None:
    """Run `worktree_setup` in `where` (guarded: it dies with a killed supervisor, and ends
    early as `ending` says), its output appended to `log`; a failure raises SetupFailed with the
    end of its output."""
    code, output = run_guarded(["/bin/sh", "-c", command], cwd=where, stdout=subprocess.PIPE, ending=ending)
    if log is not None:
        with contextlib.suppress(OSError), open(open_private(log), "ab") as out:
            out.write(f"== worktree_setup in {where} (exit {code}) ==\n".encode() + output)
    if code is None:
        raise SetupFailed(f"worktree_setup {command!r} in {where} was stopped: the run is stopping")
    if code != 0:
        tail = output.decode(errors="replace").strip().splitlines()[-5:]
        raise SetupFailed(f"worktree_setup {command!r} failed in {where} (exit {code})"
                          + (": " + " | ".join(tail) if tail else "")
                          + "; fix the command, or run it by hand in that folder to see why")


def ensure_private_dir(path: Path) -> Path:
    """`worktree_dir`, created 0700 if missing; a symlink or another user's folder is refused."""
    try:
        problem = private_dir(path, parents=True)
    except OSError as e:
        raise EnvironmentFault(f"cannot create worktree_dir {path}: {e.strerror}; "
                               "set worktree_dir (or NOVA_WORKTREE_DIR) to a writable folder") from None
    if problem:
        raise EnvironmentFault(f"refusing worktree_dir {path}: it {problem}; set worktree_dir "
                               "(or NOVA_WORKTREE_DIR) to a folder of your own")
    return path.resolve()
