"""Files that must survive a crash and folders only their user may touch: atomic replacement,
directory fsync, and private folders. Used by the journal, the input cache, the durations
history, the lock folder and the worktree folder.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path


def write_atomic(path: Path, data: str | bytes | Iterable[str], *, durable: bool = True,
                 mode: int = 0o666) -> None:
    """Replace `path` with `data` (text as UTF-8; pieces of text are written as they come, so
    a large file need not be in memory whole): readers see the old file or the new one, never
    a part. `durable`: on disk on return, even across a crash (two fsyncs); `mode` less the umask."""
    tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")  # os, not secrets: a start-up cost
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as f:
            for piece in [data] if isinstance(data, (str, bytes)) else data:
                f.write(piece.encode() if isinstance(piece, str) else piece)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def open_private(path: Path | str, flags: int = os.O_WRONLY | os.O_APPEND) -> int:
    """`path` opened (created 0600 when missing: the user's alone), close-on-exec."""
    return os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, 0o600)


def fsync_dir(folder: Path) -> None:
    """Make the names in `folder` (a file created, renamed or removed) survive a crash."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_dir(path: Path, *, parents: bool = False) -> str | None:
    """Create `path` with mode 0700 when it is missing, then say why it is unsafe to use (None
    when it is not): a symbolic link, not a folder, another user's, or writable by others than
    its owner. Raises OSError when it cannot be created."""
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a folder"
    if info.st_uid != os.geteuid():
        return f"belongs to another user (uid {info.st_uid})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is writable by other users (mode {stat.S_IMODE(info.st_mode):o})"
    return None
