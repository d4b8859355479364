"""The live view's screen, drawn from events: one counter, rows cut to the width, waiting tasks
with why and counted when they do not fit, finished rows with their duration, an ETA that only
counts down. (The real terminal is driven in test_progress through a pty.)"""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from novaproc.cli.live import LiveView
from novaproc.cli.views import last_line
from novaproc.messages import Event, TaskChanged, TaskState


def _view(tmp_path: Path, total: int, preds: dict[str, tuple[str, ...]] | None = None) -> LiveView:
    view = LiveView(io.StringIO(), io.StringIO(), total, lambda tid: tmp_path / f"{tid}.log",
                    {}, {}, slots=2, preds=preds)
    view.stop()  # drawn by hand below, not by rich's thread
    return view


def _screen(view: LiveView, width: int = 60) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(view._render())
    return out.getvalue().splitlines()


def _event(view: LiveView, tid: str, state: TaskState, **fields: object) -> None:
    view.handle(Event("r1", 0.0, TaskChanged(state, **fields), tid))  # type: ignore[arg-type]


def test_one_counter_and_rows_cut_to_the_width(tmp_path: Path) -> None:
    view = _view(tmp_path, 3)
    (tmp_path / "talker.log").write_text("x" * 300 + "\n")
    _event(view, "talker", TaskState.RUNNING)
    _event(view, "done_one", TaskState.DONE, duration=12.5)
    screen = _screen(view, width=50)
    assert all(len(line) <= 50 for line in screen)
    assert sum("[1/3]" in line for line in screen) == 1
    assert screen[0].startswith("[1/3]  1 running  0 waiting  1 queued")
    assert any("done_one" in line and "12s" in line for line in screen)  # keeps its duration


def test_waiting_tasks_say_why_and_those_that_do_not_fit_are_counted(tmp_path: Path) -> None:
    view = _view(tmp_path, 40)
    _event(view, "locked", TaskState.WAITING, reason="lock on src/a.py held by run 3f task x")
    for i in range(30):
        reason = "throttled: CPU 99%" if i % 3 else "resource db in use (1 of 1)"
        _event(view, f"w{i}", TaskState.WAITING, reason=reason)
    screen = _screen(view, width=100)
    assert any("locked" in line and "lock on src/a.py held by run 3f" in line for line in screen)
    counted = screen[-1]
    assert counted.startswith("... and ") and "waiting (" in counted
    assert "for the load" in counted and "for a resource" in counted
    assert len(screen) <= view._console.size.height


def test_queued_tasks_say_what_they_come_after(tmp_path: Path) -> None:
    view = _view(tmp_path, 3, {"log_1": (), "log_2": ("log_1",), "combine": ("log_1", "log_2")})
    _event(view, "log_1", TaskState.RUNNING)
    screen = _screen(view)
    assert any(line.split()[:4] == ["·", "log_2", "queued", "after"] and line.rstrip().endswith("log_1")
               for line in screen)
    assert any("combine" in line and "after log_1, log_2" in line for line in screen)
    _event(view, "log_1", TaskState.DONE, duration=0.3)
    assert any("combine" in line and line.rstrip().endswith("after log_2") for line in _screen(view))


def test_the_eta_only_counts_down(tmp_path: Path) -> None:
    view = _view(tmp_path, 10)
    view._durations = [10.0]
    first = view._eta_text(100.0)
    view._durations = [10.0, 60.0]  # a slow task: the estimate would jump up
    later = view._eta_text(101.0)
    assert first == "ETA ~50s" and later == "ETA ~49s"


def test_a_line_rewritten_with_carriage_returns_shows_its_last_state(tmp_path: Path) -> None:
    log = tmp_path / "bar.log"
    log.write_bytes(b"downloading\n10%\r55%\r100% done\r\n")
    assert last_line(log) == "100% done"


def test_running_rows_that_do_not_fit_are_counted_too(tmp_path: Path) -> None:
    view = _view(tmp_path, 60)
    for i in range(40):
        _event(view, f"r{i}", TaskState.RUNNING)
    counted = _screen(view)[-1]
    assert counted.startswith("... and ") and "running" in counted and "waiting" not in counted
