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


class PsutilSampler:
    """System-wide CPU since the previous reading, and memory in use, from psutil.

    A CPU reading over a very short span is noise (one busy millisecond reads as 100%), so a
    reading sooner than `min_span` after the last one returns the last one again.
    """

    def __init__(self, min_span: float = 0.25, clock: Callable[[], float] = time.monotonic) -> None:
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

    Samples at most every `interval` seconds (a sample costs little, but not nothing). Once
    over a limit it stays paused until load falls `hysteresis` points below it, so starts do
    not flap around the limit.
    """

    def __init__(self, cpu_limit: float, memory_limit: float, *, sampler: Sampler | None = None,
                 clock: Callable[[], float] = time.monotonic, interval: float = 0.5,
                 hysteresis: float = 5.0) -> None:
        self.cpu_limit, self.memory_limit = cpu_limit, memory_limit
        self.enabled = cpu_limit < 100 or memory_limit < 100
        self._sampler = sampler  # a PsutilSampler once first needed: the first task starts sooner
        self._clock, self._interval, self._hysteresis = clock, interval, hysteresis
        self._sampled_at = float("-inf")
        self.load = Load(0.0, 0.0)
        self.paused = False

    def allows_start(self, running: int) -> bool:
        """True when another task may start now; `running` tasks already run."""
        if running == 0 or not self.enabled:
            return True
        now = self._clock()
        if now - self._sampled_at >= self._interval:
            self._sampled_at = now
            if self._sampler is None:
                self._sampler = PsutilSampler()
            self.load = self._sampler()
            self.paused = self._over(self._hysteresis if self.paused else 0.0)
        return not self.paused

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
