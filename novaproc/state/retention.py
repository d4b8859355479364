"""How long finished runs are kept: `novaproc clean --runs` removes the journals of runs that
ended more than `keep_runs` ago, and the tasks files `each` wrote that no kept run uses."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from novaproc.messages import RunState
from novaproc.state.reader import list_runs


def prune_runs(state_dir: Path, keep: float, now: float | None = None) -> list[str]:
    """Remove the runs of `state_dir` that ended (or, crashed, last wrote) more than `keep`
    seconds ago; the ids removed. A running run is never touched."""
    now = time.time() if now is None else now
    removed, kept_files = [], set()
    for record in list_runs(state_dir):
        ended = record.ended or record.started + record.wall
        if record.status is RunState.RUNNING or now - ended <= keep:
            kept_files.add(str(Path(record.tasks_file).resolve()))
            continue
        shutil.rmtree(record.folder, ignore_errors=True)
        removed.append(record.id)
    for written in sorted((state_dir / "each").glob("*.toml")):
        if str(written.resolve()) not in kept_files and now - written.stat().st_mtime > keep:
            written.unlink(missing_ok=True)
    return removed
