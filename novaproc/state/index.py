"""The user's index of runs, so that a run id works from any folder.

    $XDG_STATE_HOME/novaproc/runs/<run id>  ->  <state dir>/runs/<run id>
    (default ~/.local/state/novaproc/runs), the folder 0700

One symbolic link per run. A link is made in one system call that fails when the name is
taken, so many runs starting at once never clash, and a run id is the user's alone. A link
whose run folder is gone (the state dir was removed) is pruned when the index is listed. The
index only points: every run is read from its own state dir, with that dir's checks. It is a
convenience and never fails a run: without a usable home, there is no index.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from novaproc.fsio import private_dir


def index_dir(environ: Mapping[str, str] | None = None) -> Path | None:
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_STATE_HOME") or ""
    if not os.path.isabs(base):  # the XDG rule: a relative value is ignored
        home = environ.get("HOME")
        if not home:
            return None
        base = os.path.join(home, ".local", "state")
    return Path(base, "novaproc", "runs")


def register(run_id: str, folder: Path) -> bool:
    """Point the index's `run_id` at the run `folder`. False when another run holds that id
    (the caller picks another one); True once registered, or when there is no index."""
    index = _usable()
    if index is None:
        return True
    try:
        os.symlink(folder.resolve(), index / run_id)
    except FileExistsError:
        if (index / run_id).exists() and (index / run_id).resolve() != folder.resolve():
            return False
        with contextlib.suppress(OSError):  # a pruned run's name: take it over
            os.replace(_fresh_link(index, folder), index / run_id)
    except OSError:
        pass
    return True


def locate(run_id: str) -> list[Path]:
    """The run folders (the user's own) whose id is `run_id`, or starts with it."""
    found = listed()
    exact = [p for p in found if p.name == run_id]
    return [p.resolve() for p in exact or [p for p in found if p.name.startswith(run_id)]]


def listed() -> list[Path]:
    """Every indexed run's link, when the index and the run folder are the user's alone (an
    index another user can write could point at their runs, to be resumed as ours); links
    whose run folder is gone are removed."""
    index = index_dir()
    if index is None or not index.is_dir() or _usable() is None:
        return []
    found = []
    for link in index.iterdir():
        if link.is_symlink() and link.exists():
            if _owned(link.resolve()):
                found.append(link)
        elif link.is_symlink():
            with contextlib.suppress(OSError):
                link.unlink()
    return found


def _owned(folder: Path) -> bool:
    """A run folder, and the state dir holding it, are the user's and nobody else can write them."""
    try:
        for path in (folder, folder.parent, folder.parent.parent):
            info = path.stat()
            if info.st_uid != os.getuid() or info.st_mode & 0o022:
                return False
    except OSError:
        return False
    return True


def _usable() -> Path | None:
    index = index_dir()
    if index is None:
        return None
    try:
        return None if private_dir(index, parents=True) else index  # another user's: not ours
    except OSError:
        return None


def _fresh_link(index: Path, folder: Path) -> Path:
    tmp = index / f".{os.getpid()}.{os.urandom(4).hex()}.tmp"
    os.symlink(folder.resolve(), tmp)
    return tmp
