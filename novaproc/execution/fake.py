"""A fake Executor for tests of the supervisor's loop: no processes, a fake clock.

A job's shell command is read as a script of `;`-separated steps, the only ones it knows:
`sleep S` (the job runs S seconds of fake time), `exit N` (its exit code, default 0) and
`trap '' TERM` (it ignores SIGTERM, so a terminate ends it only at SIGKILL, after the grace).
`wait` moves the clock to the next event instead of sleeping.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field

from novaproc.errors import InternalError
from novaproc.messages import Escalated, Finished, Job, Report

_STEP = re.compile(r"\s*(?:sleep\s+(?P<sleep>[\d.]+)|exit\s+(?P<exit>\d+)|(?P<trap>trap\s+''\s+TERM))\s*")


class FakeClock:
    """Seconds that pass only when told to: `clock()` reads it, `advance` moves it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


@dataclass
class _Running:
    job: Job
    started: float
    ends: float
    exit_code: int
    ignores_term: bool
    signal: int | None = None
    kill_at: float | None = None


@dataclass
class FakeExecutor:
    """Runs scripted jobs on `clock`; `submitted` keeps every job in order, `started_at` when."""

    clock: FakeClock
    kill_grace: float = 5.0
    submitted: list[Job] = field(default_factory=list)
    started_at: list[float] = field(default_factory=list)  # the clock at each submit
    _running: dict[str, _Running] = field(default_factory=dict)
    _pending: list[Report] = field(default_factory=list)

    def submit(self, job: Job) -> None:
        if job.task_id in self._running:
            raise InternalError(f"{job.task_id} submitted while it runs")
        seconds, code, ignores_term = _script(job.shell or "")
        now = self.clock()
        self._running[job.task_id] = _Running(job, now, now + seconds, code, ignores_term)
        self.submitted.append(job)
        self.started_at.append(now)

    def wait(self, timeout: float | None, wake: Sequence[int] = ()) -> list[Report]:
        if not self._pending:
            self._advance(timeout)
        reports, self._pending = self._pending, []
        return reports

    def _advance(self, timeout: float | None) -> None:
        times = [t for r in self._running.values() for t in (r.ends, r.kill_at) if t is not None]
        if not times and timeout is None:
            raise InternalError("the loop waits for ever on a fake executor with nothing to do")
        now = self.clock()
        until = min(times) if times else now + (timeout or 0.0)
        if timeout is not None:
            until = min(until, now + timeout)
        self.clock.advance(until - now)
        for tid, run in list(self._running.items()):
            if run.kill_at is not None and self.clock() >= run.kill_at:
                self._pending.append(Escalated(tid, run.job.attempt, self.kill_grace))
                self._end(tid, signal.SIGKILL)
            elif self.clock() >= run.ends:
                self._end(tid, run.signal)

    def _end(self, tid: str, sig: int | None) -> None:
        run = self._running.pop(tid)
        code = None if sig else run.exit_code
        self._pending.append(Finished(tid, run.job.attempt, code, sig, started_at=run.started,
                                      ended_at=self.clock()))

    def terminate(self, task_id: str, *, kill: bool = False) -> None:
        run = self._running.get(task_id)
        if run is None:
            return
        if kill:
            self._end(task_id, signal.SIGKILL)
        elif run.ignores_term:
            run.kill_at = run.kill_at or self.clock() + self.kill_grace
        else:
            run.ends, run.signal = self.clock(), signal.SIGTERM

    def busy(self) -> list[str]:
        return list(self._running)

    def shutdown(self) -> None:
        for tid in list(self._running):
            self._end(tid, signal.SIGKILL)
        self._pending.clear()


def _script(command: str) -> tuple[float, int, bool]:
    """(seconds, exit code, ignores SIGTERM) of a script of known steps."""
    seconds, code, ignores_term = 0.0, 0, False
    for step in filter(str.strip, command.split(";")):
        match = _STEP.fullmatch(step)
        if match is None:
            raise InternalError(f"the fake executor cannot run {step.strip()!r}")
        if match["sleep"]:
            seconds += float(match["sleep"])
        elif match["exit"]:
            code = int(match["exit"])
            break
        else:
            ignores_term = True
    return seconds, code, ignores_term
