"""Task ids: they become branch, folder and lock-file names, so few characters are allowed."""

from __future__ import annotations

import re

TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# ids that would make a confusing branch, folder or lock-file name
_RESERVED_SUFFIXES = (".lock", ".", ".git")


def valid_id(tid: str) -> bool:
    return bool(TASK_ID.fullmatch(tid)) and not tid.endswith(_RESERVED_SUFFIXES) and ".." not in tid
