"""Past and present runs, read back from their journals (see journal_format.py): a RunRecord
per run with a RecordedTask per task, the list of runs, and what a resume keeps. Read-only:
the one writer is journal.Journal.
"""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from novaproc.errors import EnvironmentFault, UsageError, did_you_mean
from novaproc.inputs.bulk import collector_paused
from novaproc.messages import LandingStarted, MergeDone, RunState, TaskState
from novaproc.state import index
from novaproc.state.format import (
    EVENTS_FILE,
    RUN_FILE,
    JournalCorrupt,
    Parsed,
    RunMeta,
    parse_events,
    read_meta,
    supervisor_alive,
)
from novaproc.state.replay import RecordedTask, Replay
from novaproc.state.summary import read_summary

__all__ = ["RecordedTask", "RunRecord", "kept_results", "list_indexed", "list_runs", "load_run"]

_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


_EXIT_OF = {RunState.DONE: 0, RunState.FAILED: 1, RunState.CANCELLED: 143}


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run read back from its folder. `status` is crashed when its supervisor is gone unfinished."""

    id: str
    folder: Path
    status: RunState
    meta: RunMeta
    tasks: tuple[RecordedTask, ...]
    started: float
    ended: float | None
    wall: float
    exit_code: int | None
    estimated_speedup: float | None = None
    speedup: float | None = None
    strategy: str | None = None
    warnings: tuple[str, ...] = ()
    landing: LandingStarted | None = None  # a crashed run's landing, begun and not finished
    merge: MergeDone | None = None  # how its results landed (the last landing of a resumed run)

    @property
    def tasks_file(self) -> str:
        return self.meta.tasks_file

    @property
    def pid(self) -> int:
        return self.meta.pid

    @property
    def description(self) -> str:
        return self.meta.description or Path(self.meta.tasks_file).name

    @property
    def running(self) -> list[RecordedTask]:
        return [t for t in self.tasks if t.state is TaskState.RUNNING]

    def task(self, task_id: str) -> RecordedTask:
        """The task named `task_id`; UsageError (exit 2) with a did-you-mean when there is none."""
        for t in self.tasks:
            if t.id == task_id:
                return t
        ids = [t.id for t in self.tasks]
        raise UsageError(f"run {self.id} has no task {task_id!r}{did_you_mean(task_id, ids)}; "
                         f"its tasks: {', '.join(ids) or 'none'}")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "status": str(self.status), "exit_code": self.exit_code,
                "tasks_file": self.tasks_file, "root": self.meta.root, "description": self.description,
                "argv": list(self.meta.argv), "pid": self.pid, "created": self.meta.created,
                "started": self.started, "ended": self.ended, "wall": self.wall, "strategy": self.strategy,
                "estimated_speedup": self.estimated_speedup, "speedup": self.speedup,
                "folder": str(self.folder), "tasks": [asdict(t) for t in self.tasks],
                "interrupted_landing": self.landing.values() if self.landing else None,
                "merge": self.merge.values() if self.merge else None, "warnings": list(self.warnings)}


def load_run(state_dir: Path, run_id: str, *, to_show: bool = False) -> RunRecord:
    """The run `run_id` (or a unique prefix of it), from `state_dir`, else from wherever the
    user's run index says it is. Unknown: UsageError (exit 2) with a hint. `to_show`: a
    finished run may come from its summary, whose meta lacks the declared tasks (a resume
    needs them; status does not)."""
    load = _load_to_show if to_show else _load
    try:
        return load(_find_folder(Path(state_dir), run_id))
    except UsageError as e:
        if not _RUN_ID.fullmatch(run_id) or "ambiguous" in str(e):
            raise
        found = index.locate(run_id)
        if len(found) != 1:
            if len(found) > 1:
                raise UsageError(f"run id {run_id!r} is ambiguous: "
                                 f"{', '.join(sorted(p.name for p in found))}; give more of it") from None
            raise
        folder = found[0]
        return load(_find_folder(folder.parent.parent, folder.name))  # with its state dir's checks


def list_indexed(problems: list[str] | None = None) -> list[RunRecord]:
    """Every run of the user's index, newest first (see list_runs: the same brief records)."""
    runs: list[RunRecord] = []
    for link in index.listed():
        folder = link.resolve()
        try:
            runs.append(_load_brief(_find_folder(folder.parent.parent, folder.name)))
        except (EnvironmentFault, UsageError) as e:
            if problems is not None:
                problems.append(str(e))
    return sorted(runs, key=lambda r: (r.meta.created, r.id), reverse=True)


def list_runs(state_dir: Path, problems: list[str] | None = None) -> list[RunRecord]:
    """Every run, newest first. A run that cannot be read is left out, its error added to `problems`.
    Brief records: a finished run with a summary comes without its tasks (load_run has them)."""
    runs: list[RunRecord] = []
    for folder in _run_folders(Path(state_dir)):
        try:
            runs.append(_load_brief(folder))
        except (EnvironmentFault, UsageError) as e:
            if problems is not None:
                problems.append(str(e))
    return sorted(runs, key=lambda r: (r.meta.created, r.id), reverse=True)


def kept_results(record: RunRecord, current_hashes: Mapping[str, str],
                 depends_on: Mapping[str, Iterable[str]] | None = None,
                 lost: Collection[str] = ()) -> dict[str, RecordedTask]:
    """The tasks a resume keeps: done, with the definition they succeeded with unchanged and a
    result commit not among the `lost` (gone from the repository), and (given `depends_on`)
    every dependency kept too, since a dependency that runs again feeds them."""
    kept = {t.id: t for t in record.tasks if t.state is TaskState.DONE and t.done_hash is not None
            and current_hashes.get(t.id) == t.done_hash and t.commit not in lost}
    changed = depends_on is not None
    while changed:
        changed = False
        for tid in list(kept):
            if any(dep not in kept for dep in depends_on.get(tid, ())):  # type: ignore[union-attr]
                del kept[tid]
                changed = True
    return kept


def _load_brief(folder: Path) -> RunRecord:
    summary = read_summary(folder, with_tasks=False)
    return _load(folder) if summary is None else _record(folder, *summary, _NOTHING_TORN)


def _load_to_show(folder: Path) -> RunRecord:
    summary = read_summary(folder)
    return _load(folder) if summary is None else _record(folder, *summary, _NOTHING_TORN)


_NOTHING_TORN = Parsed([], 0, False, 0)  # a summary is written after the journal's last line


def _load(folder: Path) -> RunRecord:
    with collector_paused():  # a run of 100,000 tasks: 200,000 events, nearly all kept
        return _replayed(folder)


def _replayed(folder: Path) -> RunRecord:
    meta = read_meta(folder / RUN_FILE)
    path = folder / EVENTS_FILE
    parsed = parse_events(path)
    replay = Replay(meta)
    for number, ev in parsed.events:
        try:
            replay.apply(ev)
        except (KeyError, ValueError, TypeError) as e:
            raise JournalCorrupt(path, number, f"unreadable {ev.get('event')} event ({e!r})") from None
    return _record(folder, meta, replay, parsed)


def _record(folder: Path, meta: RunMeta, replay: Replay, parsed: Parsed) -> RunRecord:
    end = replay.finished
    if end is not None:
        status = RunState(end["state"]) if "state" in end else _state_of_exit(end.get("exit_code"))
    else:
        status = RunState.RUNNING if supervisor_alive(meta) else RunState.CRASHED
    started = replay.started or meta.created
    stop = float(end["time"]) if end else (time.time() if status is RunState.RUNNING else replay.last_time)
    warnings = []
    if parsed.torn and status is not RunState.RUNNING:  # while running it is a line being written
        warnings.append(f"{folder / EVENTS_FILE}: dropped a torn last line ({parsed.torn} bytes) "
                        "left by a supervisor that stopped while writing it")
    return RunRecord(
        id=folder.name, folder=folder, status=status, meta=meta, tasks=tuple(replay.tasks.values()),
        started=started, ended=stop if end else None, wall=float((end or {}).get("wall", stop - started)),
        exit_code=(end.get("exit_code", _EXIT_OF.get(status)) if end else None),
        estimated_speedup=(end or {}).get("estimated_speedup", replay.started_data.get("estimated_speedup")),
        speedup=(end or {}).get("speedup"), strategy=replay.started_data.get("strategy"),
        warnings=tuple(warnings), landing=replay.landing if status is RunState.CRASHED else None,
        merge=replay.merge)


def _state_of_exit(code: int | None) -> RunState:
    if code == 0:
        return RunState.DONE
    return RunState.CANCELLED if code in (129, 130, 143) else RunState.FAILED


def _run_folders(state_dir: Path) -> list[Path]:
    runs = state_dir / "runs"
    if runs.is_symlink():  # as `run` refuses it: a setting to fix, nothing read
        raise UsageError(f"refusing {runs}: it is a symbolic link (planted?); runs are read "
                               "only from a real folder of the state dir")
    try:
        return [p for p in runs.iterdir() if not p.is_symlink() and (p / RUN_FILE).is_file()]
    except FileNotFoundError:
        return []
    except OSError as e:
        raise EnvironmentFault(f"cannot read {runs}: {e.strerror}") from None


def _find_folder(state_dir: Path, run_id: str) -> Path:
    if not _RUN_ID.fullmatch(run_id):
        raise UsageError(f"{run_id!r} is not a run id (like 3fa9c1); `novaproc status` lists the runs")
    ids = sorted(p.name for p in _run_folders(state_dir))
    matches = [i for i in ids if i == run_id] or [i for i in ids if i.startswith(run_id)]
    if len(matches) == 1:
        return state_dir / "runs" / matches[0]
    if matches:
        raise UsageError(f"run id {run_id!r} is ambiguous: {', '.join(matches)}; give more of it")
    if not ids:
        raise UsageError(f"unknown run {run_id!r}: no runs recorded in {state_dir}")
    raise UsageError(f"unknown run {run_id!r}{did_you_mean(run_id, ids)}; `novaproc status` lists "
                     f"the runs in {state_dir}")
