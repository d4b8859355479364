"""The load gate (novaproc.throttle) with an injected sampler and clock: nothing sleeps and
nothing loads the machine."""

from __future__ import annotations

import pytest

from novaproc.execution.throttle import Load, PsutilSampler, Throttle


class FakeSampler:
    """Returns the load it is set to, and counts how often it was asked."""

    def __init__(self, cpu: float = 0.0, memory: float = 0.0) -> None:
        self.load = Load(cpu, memory)
        self.calls = 0

    def set(self, cpu: float, memory: float = 0.0) -> None:
        self.load = Load(cpu, memory)

    def __call__(self) -> Load:
        self.calls += 1
        return self.load


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def throttle(sampler: FakeSampler, clock: FakeClock | None = None, *, cpu_limit: float = 90,
             memory_limit: float = 90, interval: float = 0.5, hysteresis: float = 5.0) -> Throttle:
    return Throttle(cpu_limit, memory_limit, sampler=sampler, clock=clock or FakeClock(),
                    interval=interval, hysteresis=hysteresis, recheck_span=0.1)


@pytest.mark.parametrize(("cpu", "memory"), [(95, 10), (10, 95), (99, 99)])
def test_no_start_above_a_limit(cpu, memory):
    gate = throttle(FakeSampler(cpu, memory))
    assert not gate.allows_start(running=1)
    assert gate.paused


@pytest.mark.parametrize(("cpu", "memory"), [(0, 0), (50, 50), (89.9, 89.9), (90, 90)])
def test_starts_at_or_below_the_limits(cpu, memory):
    gate = throttle(FakeSampler(cpu, memory))
    assert gate.allows_start(running=3)
    assert not gate.paused


def test_one_task_may_always_start_when_none_runs():
    sampler = FakeSampler(100, 100)
    gate = throttle(sampler)
    assert gate.allows_start(running=0)
    assert gate.allows_start(running=0)
    assert not gate.allows_start(running=1)
    assert gate.allows_start(running=0)


def test_hysteresis_keeps_it_paused_until_load_falls_below_limit_minus_margin():
    sampler, clock = FakeSampler(95), FakeClock()
    gate = throttle(sampler, clock, cpu_limit=90, hysteresis=5)
    assert not gate.allows_start(running=1)
    for cpu in (90, 87, 85.5):  # below the limit, but not by the margin yet
        sampler.set(cpu)
        clock.advance(1)
        assert not gate.allows_start(running=1), cpu
    sampler.set(84)
    clock.advance(1)
    assert gate.allows_start(running=1)
    # once running again, the plain limit applies (no margin while not paused)
    sampler.set(88)
    clock.advance(1)
    assert gate.allows_start(running=1)
    sampler.set(91)
    clock.advance(1)
    assert not gate.allows_start(running=1)


def test_hysteresis_applies_to_memory_too():
    sampler, clock = FakeSampler(0, 95), FakeClock()
    gate = throttle(sampler, clock, memory_limit=90, hysteresis=10)
    assert not gate.allows_start(running=1)
    sampler.set(0, 82)
    clock.advance(1)
    assert not gate.allows_start(running=1)
    sampler.set(0, 79)
    clock.advance(1)
    assert gate.allows_start(running=1)


def test_samples_at_most_once_per_interval():
    sampler, clock = FakeSampler(95), FakeClock()
    gate = throttle(sampler, clock, interval=0.5)
    assert not gate.allows_start(running=1)
    assert sampler.calls == 1
    sampler.set(10)  # the load fell, but the last sample is still fresh
    for _ in range(5):
        clock.advance(0.09)
        assert not gate.allows_start(running=1)
    assert sampler.calls == 1
    clock.advance(0.1)  # 0.55 s after the first sample
    assert gate.allows_start(running=1)
    assert sampler.calls == 2


def test_a_task_ending_while_paused_brings_a_recheck_soon_not_after_the_interval():
    sampler, clock = FakeSampler(99), FakeClock()
    gate = throttle(sampler, clock, interval=60.0)
    assert not gate.allows_start(running=1)  # paused by a reading taken while ours ran
    gate.task_ended()
    assert not gate.allows_start(running=1)  # read at once: that closes the span it ran in
    assert sampler.calls == 2
    sampler.set(45)  # the core it used is idle now
    clock.advance(0.05)
    assert not gate.allows_start(running=1)  # too soon for a reading of after the end
    assert sampler.calls == 2
    clock.advance(0.06)
    assert gate.allows_start(running=1)  # 0.11 s later, not 60
    assert sampler.calls == 3


def test_a_reading_just_after_an_end_that_pauses_is_rechecked_soon():
    sampler, clock = FakeSampler(50), FakeClock()
    gate = throttle(sampler, clock, interval=0.5)
    assert gate.allows_start(running=1)
    gate.task_ended()  # not paused: nothing to read yet
    assert sampler.calls == 1
    sampler.set(99)  # the span of the next reading holds the ended task's load
    clock.advance(0.5)
    assert not gate.allows_start(running=1)
    sampler.set(45)
    clock.advance(0.11)
    assert gate.allows_start(running=1)  # not 0.5 s later
    assert sampler.calls == 3


def test_a_recheck_goes_by_the_limit_not_the_hysteresis_margin():
    sampler, clock = FakeSampler(99), FakeClock()
    gate = throttle(sampler, clock, interval=60.0)
    assert not gate.allows_start(running=7)
    gate.task_ended()
    gate.allows_start(running=7)
    sampler.set(87.5)  # 7 of 8 cores busy: over 90 - 5, under 90
    clock.advance(0.11)
    assert gate.allows_start(running=7)


def test_a_recheck_that_is_still_over_keeps_it_paused():
    sampler, clock = FakeSampler(99), FakeClock()
    gate = throttle(sampler, clock, interval=60.0)
    assert not gate.allows_start(running=1)
    gate.task_ended()
    gate.task_ended()  # a second end before the reading asks for nothing more
    assert not gate.allows_start(running=1)
    clock.advance(0.11)
    assert not gate.allows_start(running=1)  # the load is not ours: stay paused
    clock.advance(1.0)
    assert not gate.allows_start(running=1)
    assert sampler.calls == 3  # and back to one reading per interval


def test_an_end_that_changes_nothing_costs_no_extra_reading():
    sampler, clock = FakeSampler(50), FakeClock()
    gate = throttle(sampler, clock, interval=0.5)
    assert gate.allows_start(running=1)
    gate.task_ended()
    clock.advance(0.5)
    assert gate.allows_start(running=1)  # the next reading, under the limit: no recheck
    clock.advance(0.11)
    assert gate.allows_start(running=1)
    assert sampler.calls == 2


def test_no_sampling_while_nothing_runs():
    sampler = FakeSampler(99)
    gate = throttle(sampler)
    for _ in range(3):
        assert gate.allows_start(running=0)
    assert sampler.calls == 0


@pytest.mark.parametrize(("cpu_limit", "memory_limit"), [(100, 100), (100.0, 100.0)])
def test_limit_100_never_throttles_nor_samples(cpu_limit, memory_limit):
    sampler, clock = FakeSampler(100, 100), FakeClock()
    gate = throttle(sampler, clock, cpu_limit=cpu_limit, memory_limit=memory_limit)
    assert not gate.enabled
    for running in range(1, 50):
        clock.advance(1)
        assert gate.allows_start(running=running)
    assert sampler.calls == 0


def test_one_limit_below_100_still_throttles():
    gate = throttle(FakeSampler(100, 50), cpu_limit=100, memory_limit=60)
    assert gate.allows_start(running=1)  # CPU may reach 100: only memory counts
    gate = throttle(FakeSampler(10, 70), cpu_limit=100, memory_limit=60)
    assert not gate.allows_start(running=1)


def test_reason_names_what_is_over_and_the_limit():
    gate = throttle(FakeSampler(97, 20), cpu_limit=90, memory_limit=80)
    gate.allows_start(running=1)
    reason = gate.reason()
    assert reason.startswith("throttled")
    assert "CPU 97%" in reason and "limit 90%" in reason
    assert "memory" not in reason
    gate = throttle(FakeSampler(10, 95), cpu_limit=90, memory_limit=80)
    gate.allows_start(running=1)
    assert "memory 95%" in gate.reason() and "limit 80%" in gate.reason()


def test_psutil_sampler_reads_plausible_values_and_caches_short_spans():
    clock = FakeClock()
    sampler = PsutilSampler(min_span=0.25, clock=clock)
    first = sampler()
    assert 0 <= first.cpu <= 100 and 0 < first.memory <= 100
    clock.advance(0.1)
    assert sampler() is first  # too soon: a CPU reading over 0.1 s is noise
    clock.advance(0.2)
    second = sampler()
    assert 0 <= second.cpu <= 100 and 0 < second.memory <= 100


def test_default_throttle_uses_psutil_when_enabled():
    gate = Throttle(90, 90, interval=0.0)
    gate.allows_start(running=1)  # must not raise; whatever the machine's load
    assert 0 <= gate.load.cpu <= 100 and 0 < gate.load.memory <= 100
