"""A finished run's summary: what `status` shows of it, kept beside its journal so that reading
a run of 100,000 tasks does not mean replaying its 200,000 events.

    <state_dir>/runs/<id>/summary.jsonl   line 1: the run (its record without the tasks)
                                          line 2: a row of field values per task

The journal's writer keeps the fold of the events it writes (see `replay`) and writes the summary
once the run has finished. The summary names the size of events.jsonl it folds: a resume appends
to the journal, so a summary of a smaller file is stale and the events are replayed instead.
Anything unreadable is no summary: the journal is the truth, the summary only a shortcut.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from pathlib import Path
from typing import Any

from novaproc.fsio import write_atomic
from novaproc.inputs.bulk import collector_paused
from novaproc.state.format import EVENTS_FILE, RunMeta, json_pieces, meta_fields
from novaproc.state.replay import Replay

SUMMARY_FILE = "summary.jsonl"
SUMMARY_VERSION = 1


def write_summary(folder: Path, meta: RunMeta, replay: Replay) -> None:
    """The summary of the run in `folder`, as folded in `replay`; nothing when it cannot be
    written (readers replay the journal instead)."""
    head, rows = replay.snapshot()
    run = meta_fields(meta)
    try:
        size = (folder / EVENTS_FILE).stat().st_size
        text = json.dumps({"novaproc_summary": SUMMARY_VERSION, "events_size": size, "meta": run, **head},
                          default=str, separators=(",", ":"))
        pieces = itertools.chain((text, "\n"), json_pieces(rows), ("\n",))  # made as they are written
        write_atomic(folder / SUMMARY_FILE, pieces, durable=False, mode=0o600)
    except (OSError, TypeError, ValueError):
        pass  # a shortcut lost: status replays the events


def drop_summary(folder: Path) -> None:
    """Before a resumed run appends: its summary is about to be stale."""
    with contextlib.suppress(OSError):
        (folder / SUMMARY_FILE).unlink()


def read_summary(folder: Path, with_tasks: bool = True) -> tuple[RunMeta, Replay] | None:
    """The run's meta (without its declared tasks) and the fold of its events, from its summary;
    None when there is no summary, or a stale or unreadable one. Without `with_tasks`, the fold
    holds no tasks: enough to list the run."""
    try:
        with collector_paused(), (folder / SUMMARY_FILE).open("rb") as f:
            if os.fstat(f.fileno()).st_uid != os.getuid():
                return None
            head = json.loads(f.readline())
            if head.get("novaproc_summary") != SUMMARY_VERSION:
                return None
            if (folder / EVENTS_FILE).stat().st_size != head["events_size"]:
                return None  # events appended since (a resume)
            rows: list[list[Any]] = json.loads(f.readline()) if with_tasks else []
            meta = RunMeta.from_json(head["meta"])
            return meta, Replay.restore(meta, head, rows)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
