"""`verify` on merged results: run in a worktree of its own (one, reused from commit to commit,
furnished like a task's), one verdict per commit, and the bisection that finds the first
result that breaks it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from novaproc.execution.guard import run_guarded
from novaproc.fsio import open_private
from novaproc.isolation import submodules
from novaproc.isolation.furnish import SetupFailed, bring_in, ensure_private_dir, run_setup
from novaproc.isolation.policy import MergePolicy
from novaproc.isolation.records import Worktree
from novaproc.isolation.repo import Repo
from novaproc.messages import Phase


def first_failing(points: Sequence[str], verifier: Verifier) -> int | None:
    """The index in `points` (commits, each holding one more result than the one before) of the
    first on which verify fails (merge-queue bisection), assuming it fails on the last; None
    when it fails on the first already, without any of the results."""
    good, bad = 0, len(points) - 1
    while bad - good > 1:
        mid = (good + bad) // 2
        why = f"bisect: verify with the first {mid} of {len(points) - 1} results"
        good, bad = (mid, bad) if verifier.passes(points[mid], why) else (good, mid)
    if bad == 1 and not verifier.passes(points[0], "bisect: verify without any result"):
        return None
    return bad


class VerifyStopped(Exception):
    """The run stopped while verify ran: no verdict."""


class Verifier:
    """Runs `verify` at the root of a worktree of a given commit (one worktree, reused)."""

    def __init__(self, repo: Repo, run_id: str, policy: MergePolicy) -> None:
        self.repo, self.run_id, self.policy, self.ending = repo, run_id, policy, policy.ending
        self.path = ensure_private_dir(Path(policy.worktree_dir)) / f"{run_id}-.verify"
        self.wt: Worktree | None = None
        self.verdicts: dict[str, bool] = {}
        self.flaky: list[str] = []  # commits on which verify both passed and failed
        self.populated: submodules.Populated = ()

    def passes(self, commit: str, why: str = "verify") -> bool:
        """Whether verify passes on `commit`. A failure is confirmed by `verify_retries` more runs
        on the same tree before it counts: a verify that passes on any of them is flaky, and a
        flaky verify blames nobody, so the commit passes (and is noted in `flaky`). `why` is
        what the run is told, before and after."""
        if commit not in self.verdicts:
            announce, started = self.policy.announce, time.monotonic()
            announce(Phase("verify", f"{why} ({commit[:12]})"))
            runs = [self._run(commit)]
            while not runs[-1] and len(runs) <= self.policy.verify_retries:
                runs.append(self._run(commit))
            if runs[-1] and len(runs) > 1:
                self.flaky.append(commit)
            self.verdicts[commit] = runs[-1]
            verdict = "passed" if runs[-1] else "failed"
            announce(Phase("verify", f"{why}: {verdict}" + (" (flaky)" if commit in self.flaky else ""),
                           round(time.monotonic() - started, 3)))
        return self.verdicts[commit]

    def _run(self, commit: str) -> bool:
        log = self.policy.verify_log
        with open(open_private(log) if log else os.devnull, "ab") as out:
            out.write(f"== verify {commit} ==\n".encode())
            out.flush()
            try:
                self._checkout(commit)
            except SetupFailed as e:
                out.write(f"{e}\n".encode())
                if self.ending.stopping():
                    raise VerifyStopped from None
                return False
            command = self.policy.verify or ()
            argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
            # guarded: it dies with a killed supervisor, as tasks do; marked like the run's tasks
            code, _ = run_guarded(argv, cwd=self.path, stdout=out,
                                  env={**os.environ, "NOVA_RUN_ID": self.run_id}, ending=self.ending)
            if code is None and self.ending.stopping():
                out.write(b"verify stopped: the run is stopping\n")
                raise VerifyStopped
            return code == 0

    def _checkout(self, commit: str) -> None:
        if self.wt is None:
            with self.repo.worktree_lock():
                if self.path.exists():
                    self.repo.remove_worktree(self.path)
                self.wt = self.repo.add_worktree(self.path, commit)
        else:
            submodules.depopulate(self.repo, self.path, self.populated)  # anew at this commit's
            self.repo.in_worktree(self.wt, "checkout", "-q", "-f", "--detach", commit)
            self.repo.in_worktree(self.wt, "clean", "-q", "-ffdx")
        self.repo.fill_lfs(self.path)
        self.populated = submodules.populate(self.repo, self.path)
        bring_in(self.repo.root, self.path, self.policy.include)
        if self.policy.setup:
            run_setup(self.path, self.policy.setup, self.ending, self.policy.setup_log)

    def close(self) -> None:
        if self.wt is not None:
            submodules.depopulate(self.repo, self.path, self.populated)
            with self.repo.worktree_lock():
                self.repo.remove_worktree(self.wt.path)


