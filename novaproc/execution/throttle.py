"""The load gate: no new task starts while the machine's CPU or memory is above its limit.

psutil samples the system; the sampler and the clock are injected so tests need not load
the machine or sleep. One task may always run when none runs, so progress is guaranteed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Load:
    cpu: float  # percent of all cores, 0-100
    memory: float  # percent of RAM in use


class Sampler(Protocol):
    def __call__(self) -> Load: ...


RECHECK_SPAN = 0.1  # seconds: at 100 Hz kernel ticks, 5-point steps on 2 cores, finer on more


class PsutilSampler:
    """System-wide CPU since the previous reading, and memory in use, from psutil.

    A CPU reading over a very short span is noise (one busy millisecond reads as 100%), so a
    reading sooner than `min_span` after the last one returns the last one again.
    """

    # half the recheck span: the reading at a task's end must close the span, not be the last again
    def __init__(self, min_span: float = RECHECK_SPAN / 2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        import psutil

        self._psutil, self._clock, self._min_span = psutil, clock, min_span
        psutil.cpu_percent(interval=None)  # the first reading is meaningless: prime it
        self._read_at = clock()
        self._last = Load(0.0, psutil.virtual_memory().percent)

    def __call__(self) -> Load:
        now = self._clock()
        if now - self._read_at >= self._min_span:
            self._read_at = now
            self._last = Load(self._psutil.cpu_percent(interval=None),
                              self._psutil.virtual_memory().percent)
        return self._last


class Throttle:
    """Decides whether load allows one more task to start.

    Samples at most every `interval` seconds (a sample costs little, but not nothing), but
    for the rechecks below. Once over a limit it stays paused until load falls `hysteresis`
    points below it, so starts do not flap around the limit.

    A CPU reading covers the span since the one before, so it counts the load of a task of
    ours that ended within that span. If such a reading pauses starts, the throttle checks
    again `recheck_span` after it, over a span the ended task has no part in, and against the
    limit itself. With as many CPU-bound tasks as cores, a core freed is refilled in a tenth
    of a second rather than left idle for up to a second.
    """

    def __init__(self, cpu_limit: float, memory_limit: float, *, sampler: Sampler | None = None,
                 clock: Callable[[], float] = time.monotonic, interval: float = 0.5,
                 hysteresis: float = 5.0, recheck_span: float = RECHECK_SPAN) -> None:
        self.cpu_limit, self.memory_limit = cpu_limit, memory_limit
        self.enabled = cpu_limit < 100 or memory_limit < 100
        self._sampler = sampler  # a PsutilSampler once first needed: the first task starts sooner
        self._clock, self._interval, self._hysteresis = clock, interval, hysteresis
        self._recheck_span = recheck_span
        self._sampled_at = float("-inf")
        self._recheck_at: float | None = None
        self._ended_in_span = False  # a task of ours ended since the last reading
        self.load = Load(0.0, 0.0)
        self.paused = False

    def allows_start(self, running: int) -> bool:
        """True when another task may start now; `running` tasks already run."""
        if running == 0 or not self.enabled:
            return True
        now = self._clock()
        if self._recheck_at is not None:
            if now >= self._recheck_at:
                self._sample(now, recheck=True)
        elif now - self._sampled_at >= self._interval:
            self._sample(now)
        return not self.paused

    def task_ended(self) -> None:
        """A task of ours ended: the readings so far count load that is gone."""
        self._ended_in_span = True
        if self.paused and self._recheck_at is None:
            self._recheck_at = self._clock()  # read at once: that closes the span it ran in

    def _sample(self, now: float, *, recheck: bool = False) -> None:
        ended_in_span, self._ended_in_span = self._ended_in_span, False
        self._sampled_at = now
        if self._sampler is None:
            self._sampler = PsutilSampler()
        self.load = self._sampler()
        # a recheck goes by the limit alone: N-1 of N cores busy reads 87.5% on 8 cores, which
        # the hysteresis margin would hold below a limit of 90. It can flap once per task end.
        self.paused = self._over(self._hysteresis if self.paused and not recheck else 0.0)
        self._recheck_at = now + self._recheck_span if self.paused and ended_in_span else None

    def _over(self, margin: float) -> bool:
        return (self.load.cpu > self.cpu_limit - margin
                or self.load.memory > self.memory_limit - margin)

    def reason(self) -> str:
        parts = []
        if self.load.cpu > self.cpu_limit - self._hysteresis:
            parts.append(f"CPU {self.load.cpu:.0f}% (limit {self.cpu_limit:.0f}%)")
        if self.load.memory > self.memory_limit - self._hysteresis:
            parts.append(f"memory {self.load.memory:.0f}% (limit {self.memory_limit:.0f}%)")
        return "throttled: " + ", ".join(parts or ["load"])
