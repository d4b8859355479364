"""The supervisor's side of a task run on a cluster's worker (the far side is `away`): the
commit the task starts from, packed with the objects the worker may lack; its result, brought
back into the task's worktree (or, isolation "none", into the checkout) as if it ran here.
Landing, verify and resume then see a task like any other.
"""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
from collections.abc import Mapping
from pathlib import Path

from novaproc.errors import EnvironmentFault
from novaproc.isolation.away import place, tidy
from novaproc.isolation.bundles import make_bundle, take_bundle
from novaproc.isolation.furnish import included
from novaproc.isolation.repo import Repo
from novaproc.isolation.worktree_pool import commit_message
from novaproc.messages import Delivery, Job, Parcel

_IDENTITY = ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL")


class Shipper:
    """Packs tasks' checkouts for a cluster and unpacks their results, for one run; `place` and
    `tidy` are what runs on the workers."""

    place = staticmethod(place)
    tidy = staticmethod(tidy)

    def __init__(self, repo: Repo | None, base: str | None, *, root: Path, run_id: str,
                 labels: Mapping[str, str], setup: str | None, include: tuple[str, ...],
                 limits: tuple[float, float] = (100.0, 100.0)) -> None:
        """`repo` and `base` as the run's preflight found them; None for a run in place, which
        ships the checkout as it is (its repository found from `root`)."""
        self.repo = repo or Repo(root)
        self.base = base or self.repo.git("rev-parse", "HEAD").strip()
        self.run_id, self.labels = run_id, labels
        self.setup, self.include, self.limits = setup, include, limits
        # a worker keeps one clone per repository: this one's name, the same from run to run
        self.name = hashlib.sha256(f"{socket.gethostname()}:{self.repo.common_dir}".encode()).hexdigest()[:16]
        self._identity: dict[str, str] | None = None

    def pack(self, job: Job, *, complete: bool = False) -> Parcel:
        """The parcel of `job`'s checkout: thin against the run's base unless `complete`."""
        folder = Path(job.folder)
        snapshot = folder == self.repo.root
        start = self._snapshot() if snapshot else self.repo.git("rev-parse", "HEAD", cwd=folder).strip()
        have = None if complete else self.base
        bundle = None if start == have else make_bundle(self.repo, start, have)
        message = commit_message(self.labels.get(job.task_id) or job.task_id, self.run_id, job.task_id)
        return Parcel(self.name, start, bundle, have, self.setup, None, message, self.identity(), snapshot,
                      self.limits)

    def included(self) -> bytes | None:
        """worktree_include's files of the checkout as a tar archive (folders with their contents)."""
        if not self.include:
            return None
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for src, rel in included(self.repo.root, self.include):
                if not self.repo.tracked(rel):
                    tar.add(src, arcname=rel)
        return buffer.getvalue()

    def unpack(self, job: Job, parcel: Parcel, delivery: Delivery, *, failed: bool = False) -> None:
        """Bring the result of `delivery` where `job` would have left it; of a `failed` attempt,
        into its worktree as uncommitted changes (as a failed task here leaves them; never into
        the checkout). Raises EnvironmentFault."""
        if delivery.commit is None or delivery.bundle is None or (failed and parcel.snapshot):
            return
        if not take_bundle(self.repo, delivery.bundle):
            raise EnvironmentFault(f"the result of {job.task_id} builds on a commit this repository lacks")
        if parcel.snapshot:  # isolation "none": the task's changes, applied to the checkout
            diff = self.repo.git("diff", "--binary", parcel.start, delivery.commit)
            if diff:  # its last newline, which the adapter's text output drops, belongs to the patch
                self.repo.git("apply", "--binary", "-", stdin=diff + "\n")
        elif failed:  # its files, unstaged on the start: nothing of it is a result
            self.repo.git("read-tree", "-u", "--reset", delivery.commit, cwd=Path(job.folder))
            self.repo.git("reset", "-q", cwd=Path(job.folder))
        else:
            self.repo.git("reset", "-q", "--hard", delivery.commit, cwd=Path(job.folder))

    def identity(self) -> dict[str, str]:
        """The user's name and email as git has them here, for the commits a worker makes."""
        if self._identity is None:
            self._identity = {}
            for who in ("AUTHOR", "COMMITTER"):
                code, out, _ = self.repo.run("var", f"GIT_{who}_IDENT", retries=0)
                name, _, rest = out.partition(" <")
                if code == 0 and rest:
                    self._identity |= {f"GIT_{who}_NAME": name, f"GIT_{who}_EMAIL": rest.partition(">")[0]}
        return self._identity

    def _snapshot(self) -> str:
        """A commit of the checkout as it is (tracked changes and untracked files, .gitignore
        respected) on top of HEAD: what a task run in place would see."""
        head = self.repo.git("rev-parse", "HEAD").strip()
        index = self.repo.git_dir / f"novaproc-snapshot-{self.run_id}"
        env = {"GIT_INDEX_FILE": str(index)}
        try:
            self.repo.git("read-tree", head, env=env)
            self.repo.git("add", "-A", env=env)
            tree = self.repo.git("write-tree", env=env).strip()
        finally:
            index.unlink(missing_ok=True)
        if tree == self.repo.git("rev-parse", "HEAD^{tree}").strip():
            return head
        return self.repo.commit_tree(tree, [head], f"novaproc: the checkout as run {self.run_id} found it")


