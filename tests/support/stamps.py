"""Tasks that record when they start and end, and the checks on those times."""

from __future__ import annotations

from pathlib import Path

from support.tasks import task


def stamp_cmd(stamps: Path, seconds: float, then: str = "") -> str:
    """A shell command that records its start and end (wall clock) around a sleep."""
    rec = f'echo "$NOVA_TASK_ID %s $(date +%%s.%%N)" >> {stamps}'
    return f"{rec % 'start'}; sleep {seconds}; {rec % 'end'}" + (f"; {then}" if then else "")


def stamped(stamps: Path, ids: list[str], seconds: float = 0.3, **fields: object) -> str:
    """One task per id, each a stamp_cmd sleeping `seconds`, with `fields`."""
    return "".join(task(tid, stamp_cmd(stamps, seconds), **fields) for tid in ids)


def read_stamps(stamps: Path) -> dict[str, list[tuple[float, float]]]:
    """Task id -> its (start, end) intervals, one per attempt, in order."""
    open_: dict[str, float] = {}
    spans: dict[str, list[tuple[float, float]]] = {}
    for line in stamps.read_text().splitlines():
        tid, what, at = line.split()
        if what == "start":
            open_[tid] = float(at)
        else:
            spans.setdefault(tid, []).append((open_.pop(tid), float(at)))
    return spans


def max_overlap(spans: dict[str, list[tuple[float, float]]]) -> int:
    points = sorted((t, d) for runs in spans.values() for s, e in runs for t, d in ((s, 1), (e, -1)))
    most = now = 0
    for _, delta in points:  # at equal times an end (-1) sorts before a start (+1)
        now += delta
        most = max(most, now)
    return most


def stamp(path: Path) -> str:
    """A shell snippet that appends the current time (seconds, ns resolution) to `path`."""
    return f'date +%s.%N >> "{path}"'


def meeting_cmd(log: Path, count: int, patience: float = 20.0) -> str:
    """A shell command that writes when it starts to `log`, waits (up to `patience` seconds)
    until `count` have started, and writes when it ends: run together, all the starts come
    before every end; one after another, the first ends alone. No sleep's length to tune."""
    stamp = f'echo "%s $(date +%%s.%%N)" >> "{log}"'
    wait = (f'n=0; while [ "$(grep -c ^start "{log}")" -lt {count} ] && [ $n -lt {int(patience * 10)} ]; '
            "do sleep 0.1; n=$((n+1)); done")
    return f"{stamp % 'start'}; {wait}; {stamp % 'end'}"


def met(log: Path, count: int) -> bool:
    """Whether `count` meeting_cmds that wrote to `log` all started before any ended."""
    lines = [line.split() for line in log.read_text().splitlines()]
    starts = [float(at) for what, at in lines if what == "start"]
    ends = [float(at) for what, at in lines if what == "end"]
    return len(starts) == len(ends) == count and max(starts) < min(ends)
