"""Commits as bytes, for another machine: git bundles made and read through the git adapter.

A bundle names its tip by a ref, so each is made from a short-lived ref of its own; one made
against a commit the receiver has (`have`) holds only the objects the receiver lacks.
"""

from __future__ import annotations

import os
import tempfile

from novaproc.isolation.repo import Repo, fault

_LACKS = "lacks these prerequisite commits"


def make_bundle(repo: Repo, tip: str, have: str | None = None) -> bytes:
    """A bundle of `tip` and its history: all of it, or (`have`) what `have` lacks."""
    ref = f"refs/nova/ship/{os.getpid()}-{os.urandom(4).hex()}"
    repo.set_ref(ref, tip)
    try:
        with tempfile.TemporaryDirectory(prefix="novaproc-bundle-") as folder:
            path = os.path.join(folder, "b")
            repo.git("bundle", "create", "-q", path, f"{have}..{ref}" if have and have != tip else ref)
            with open(path, "rb") as f:
                return f.read()
    finally:
        repo.delete_refs([ref])


def take_bundle(repo: Repo, data: bytes) -> bool:
    """Store the objects of bundle `data` in `repo`; False when it is thin against commits the
    repository lacks (nothing stored then)."""
    with tempfile.TemporaryDirectory(prefix="novaproc-bundle-") as folder:
        path = os.path.join(folder, "b")
        with open(path, "wb") as f:
            f.write(data)
        code, _, err = repo.run("bundle", "unbundle", path, retries=0)
    if code != 0 and _LACKS in err:
        return False
    if code != 0:
        raise fault(("bundle", "unbundle"), code, err, repo.root)
    return True
