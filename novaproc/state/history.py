"""Durations of past runs, kept per tasks file: they feed the plan's estimate and the ETA.

    <state_dir>/history/<key>.json    {"tasks_file": path, "tasks": {id: {"hash", "recent"}}}

One small file per tasks file, so a plan reads it alone, however many runs the state dir
holds (ninja's .ninja_log, in spirit). Losing it loses estimates, nothing else.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from novaproc.fsio import write_atomic
from novaproc.state.format import json_pieces

HISTORY_DIR, HISTORY_KEEP = "history", 3


def history_file(state_dir: Path, tasks_file: str | Path) -> Path:
    """Where the durations of the runs of `tasks_file` are kept."""
    key = hashlib.sha256(os.path.realpath(tasks_file).encode()).hexdigest()[:16]
    return Path(state_dir) / HISTORY_DIR / f"{key}.json"


def read_history(path: Path) -> dict[str, tuple[str, list[float]]]:
    """Task id -> (definition hash, recent durations, newest first); {} if none or unreadable:
    an estimate is never worth failing a run for."""
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))["tasks"]
        return {tid: _entry(t) for tid, t in tasks.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
        return {}


def _entry(kept: Any) -> tuple[str, list[float]]:
    """[hash, seconds...] as written now (a list parses to a third of a {"hash", "recent"}
    table's memory: 100,000 of those were the largest thing at a long run's end), or that
    table, as written before."""
    if isinstance(kept, list):
        return str(kept[0]), [float(d) for d in kept[1:]]
    return str(kept["hash"]), [float(d) for d in kept["recent"]]


def save_durations(state_dir: Path, tasks_file: str | Path, durations: Mapping[str, float],
                   current: Mapping[str, str]) -> None:
    """Add task id -> seconds of a run's successes to its tasks file's history, keeping the
    last HISTORY_KEEP per task under its definition now (`current`: id -> hash of every task
    the file holds). Tasks gone from the file or redefined are dropped, so a file whose task
    ids change from run to run (generated ones) does not make its history grow for ever.
    Runs of one file never overlap (they hold its run lock), so read, change and replace is
    safe."""
    path = history_file(state_dir, tasks_file)
    known = {tid: kept for tid, kept in read_history(path).items() if current.get(tid) == kept[0]}
    for tid, seconds in durations.items():
        known[tid] = (current[tid], [round(seconds, 3), *known.get(tid, ("", []))[1]][:HISTORY_KEEP])
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    head = f'{{"tasks_file": {json.dumps(os.path.realpath(tasks_file))}, "tasks": '
    tasks = ((tid, [digest, *recent]) for tid, (digest, recent) in known.items())
    write_atomic(path, itertools.chain((head,), json_pieces(tasks, pairs=True), ("}",)),
                 durable=False, mode=0o600)  # estimates only: not worth two fsyncs at the end of every run


def typical_durations(state_dir: Path, tasks_file: Path, hashes: Mapping[str, str], *,
                      last: int = HISTORY_KEEP) -> dict[str, float]:
    """Task id -> typical duration (median of its `last` recent successes) in past runs of
    `tasks_file`, for tasks whose definition hash then equals `hashes[id]` now."""
    return {tid: _median(recent[:last])
            for tid, (digest, recent) in read_history(history_file(state_dir, tasks_file)).items()
            if recent and digest == hashes.get(tid)}


def _median(values: list[float]) -> float:
    """statistics.median, without the 6 ms its import (fractions, decimal) adds to every run."""
    ordered, mid = sorted(values), len(values) // 2
    return ordered[mid] if len(values) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
