"""How the supervisor runs jobs (ninja's CommandRunner), whatever runs them: the Executor
interface. The local worker pool implements it (pool.py); fake_executor.py beside it runs
scripted jobs on a fake clock, for tests of the loop's decisions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from novaproc.messages import Job, Report


class Executor(Protocol):
    """Runs one attempt of a task per submitted Job. Every method returns at once but `wait`."""

    def submit(self, job: Job) -> None:
        """Start `job`; the caller never submits more jobs than it has slots."""

    def wait(self, timeout: float | None, wake: Sequence[int] = ()) -> list[Report]:
        """The reports since the last call, waiting up to `timeout` seconds (None: for ever) for
        the first one, or until one of the `wake` descriptors is readable. Every submitted job
        ends in exactly one Finished, also when what ran it died."""

    def terminate(self, task_id: str, *, kill: bool = False) -> None:
        """Stop `task_id`'s whole process tree: SIGTERM, then SIGKILL after the kill grace (an
        Escalated report says so); `kill`: SIGKILL at once."""

    def busy(self) -> list[str]:
        """The tasks submitted and not yet reported finished."""

    def shutdown(self) -> None:
        """Stop everything, tasks included; safe to call more than once."""
