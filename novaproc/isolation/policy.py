"""How a run's results land: the merge policy, as the settings and the preflight make it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from novaproc.execution.guard import UNSTOPPED, Ending
from novaproc.inputs.settings import DEFAULT_WORKTREE_DIR
from novaproc.messages import LandingStarted, Phase


def _unheard(landing: LandingStarted | Phase) -> None:
    """Nobody journals this landing (a test, a benchmark): it cannot be finished after a crash."""


@dataclass(frozen=True)
class MergePolicy:
    """How a run's results land: on which branch, from which base commit (the target's tip
    when the run started), what a conflict does, and how `verify` runs (in its own worktree
    under `worktree_dir`, furnished with `include` and `setup`, its output to `verify_log`)."""

    target: str
    base: str
    on_conflict: str = "rerun"
    verify: str | Sequence[str] | None = None
    worktree_dir: Path = Path(DEFAULT_WORKTREE_DIR)
    setup: str | None = None
    include: Sequence[str] = ()
    history: str = "merge"  # the shape of what lands: merge, linear or squash (see history.py)
    verify_log: Path | None = None
    setup_log: Path | None = None  # where the output of verify's worktree_setup goes
    ending: Ending = UNSTOPPED
    verify_retries: int = 1  # extra runs of a failing verify on the same tree before it counts
    conflict_check: str = "file"  # or "line": trust git's line merge (see Repo.merge)
    # told of each phase as it happens, and of the landing before the checkout is touched
    announce: Callable[[LandingStarted | Phase], None] = _unheard
