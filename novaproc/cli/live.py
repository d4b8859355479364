"""The live view on a terminal: one header line (the counter, what runs, waits and is queued,
elapsed time, an ETA, the phase after the tasks), then a row a task, cut to the terminal's
width and never wrapped: running tasks with their last line of output, the latest finished
ones with their duration, waiting ones with why. What does not fit is counted, by reason.
Redrawn by rich a few times a second, from a copy of the states the events keep.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from novaproc.cli.text import format_duration, one_line
from novaproc.cli.views import (
    MARKS,
    View,
    escape_markup,
    failure_text,
    last_line,
    output_end,
    phase_text,
)
from novaproc.messages import Event, MergeDone, Message, Phase, TaskChanged, TaskState

if TYPE_CHECKING:
    from novaproc.run.outcome import RunOutcome

RECENT = 5  # finished tasks kept on screen, with their duration
_CHROME = 3  # lines of the screen that are not task rows


class LiveView(View):
    def __init__(self, out: TextIO, err: TextIO, total: int, log_path: Callable[[str], Path],
                 labels: dict[str, str], estimates: dict[str, float], slots: int,
                 preds: dict[str, tuple[str, ...]] | None = None) -> None:
        super().__init__(out, err, total, log_path)
        from rich.console import Console
        from rich.live import Live

        self._log_path, self._labels, self._estimates, self._slots = log_path, labels, estimates, slots
        self._preds = preds or {}  # what each task comes after (dependencies, ordering): why it is queued
        self._console = Console(file=out, stderr=False)
        self._states: dict[str, tuple[str, float, str, float | None]] = {}  # (state, since, why, took)
        self._recent: list[str] = []
        self._durations: list[float] = []
        self._phase = ""  # what the run does after its tasks (merge, verify), as a line
        self._eta: tuple[float, float] | None = None  # (seconds left, when said): it only counts down
        self._live = Live(console=self._console, refresh_per_second=4, transient=True,
                          get_renderable=self._render)
        self._live.start()

    def warn(self, message: Message) -> None:
        self._console.print(f"[yellow]novaproc: {message.level}: {escape_markup(message.text)}[/]")

    def show(self, event: Event) -> None:
        d = event.payload
        if isinstance(d, Phase | MergeDone):  # after the tasks: the view is not frozen meanwhile
            self._phase = phase_text(d)
            if isinstance(d, MergeDone) or d.seconds is not None:
                self._console.print(f"[bold]novaproc:[/] {escape_markup(self._phase)}", highlight=False)
            return
        if not isinstance(d, TaskChanged) or event.task_id is None:
            return
        self._states[event.task_id] = (str(d.state), time.monotonic(), d.reason or "", d.duration)
        if d.state.finished:
            self._recent = [*self._recent[-(RECENT - 1):], event.task_id]
            if d.state is TaskState.DONE:
                self._durations.append(d.duration or 0.0)
            if d.state is TaskState.FAILED:
                self._console.print(f"[red]✗ {event.task_id}[/] {escape_markup(failure_text(d))}")
                for line in output_end(self._log_path, event.run_id, event.task_id):
                    self._console.print(f"    {escape_markup(line)}", highlight=False, overflow="ellipsis",
                                        no_wrap=True)

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        now, states = time.monotonic(), dict(self._states)  # events arrive on another thread
        running = [t for t, v in states.items() if v[0] == "running"]
        waiting = [t for t, v in states.items() if v[0] == "waiting"]
        room = max(3, self._console.size.height - _CHROME)
        table = Table.grid(padding=(0, 1), expand=True)
        for ratio in (None, None, None, 1):
            table.add_column(no_wrap=True, overflow="ellipsis", ratio=ratio)
        rows = [*running, *[t for t in self._recent if t in states], *waiting]
        shown = rows[:room - 1 if len(rows) > room else room]
        for tid in shown:
            table.add_row(*self._row(tid, states[tid], now))
        for row in self._queued(states, room - len(rows)):
            table.add_row(*row)
        header = Text(self._header(len(running), len(waiting), now), no_wrap=True, overflow="ellipsis")
        if len(rows) <= room:
            return Group(header, table)
        rest = _counted([states[t] for t in rows[len(shown):]])
        return Group(header, table, Text(rest, no_wrap=True, overflow="ellipsis"))

    def _queued(self, states: dict[str, tuple[str, float, str, float | None]],
                 room: int) -> list[tuple[str, ...]]:
        """Rows for tasks not yet ready, while there is room: what each still comes after."""
        rows: list[tuple[str, ...]] = []
        for tid, preds in self._preds.items():
            if len(rows) >= room:
                break
            if tid in states and states[tid][0] != "queued":
                continue
            waits_on = [p for p in preds if p not in states or not TaskState(states[p][0]).finished]
            after = ", ".join(waits_on[:3]) + (", ..." if len(waits_on) > 3 else "")
            rows.append((MARKS["queued"], tid, "queued", escape_markup(f"after {after}")))
        return rows

    def _header(self, running: int, waiting: int, now: float) -> str:
        queued = max(0, self.total - self.finished - running - waiting)
        parts = [f"[{self.finished}/{self.total}]", f"{running} running", f"{waiting} waiting",
                 f"{queued} queued", f"elapsed {format_duration(now - self.started)}", self._eta_text(now)]
        return "  ".join(p for p in [*parts, one_line(self._phase)] if p)

    def _row(self, tid: str, state: tuple[str, float, str, float | None], now: float) -> tuple[str, ...]:
        name, since, why, took = state
        if name == "running":
            return MARKS["running"], tid, format_duration(now - since), escape_markup(
                last_line(self._log_path(tid)))
        if name == "waiting":
            return MARKS["waiting"], tid, "waiting", escape_markup(one_line(why))
        when = format_duration(took) if took is not None else name
        return MARKS.get(name, "?"), tid, when, escape_markup(one_line(self._labels.get(tid, "")))

    def _eta_text(self, now: float) -> str:
        """Time left from the durations so far (the plan's estimates before any), never going up
        between two looks: a slow task does not make the ETA jump back and forth."""
        left = self.total - self.finished
        if not left:
            return ""
        known = self._durations or list(self._estimates.values()) or [0.0]
        estimate = sum(known) / len(known) * left / min(self._slots, left)
        if self._eta is not None and (counted_down := self._eta[0] - (now - self._eta[1])) > 0:
            estimate = min(estimate, counted_down)
        self._eta = (estimate, now)
        return f"ETA ~{format_duration(estimate)}"

    def stop(self) -> None:
        self._live.stop()

    def close(self, outcome: RunOutcome) -> None:
        self.stop()
        super().close(outcome)


def _counted(hidden: list[tuple[str, float, str, float | None]]) -> str:
    """The rows that do not fit: '... and 17 more: 2 running, 15 waiting (12 for a lock, ...)'."""
    states = Counter(state for state, *_ in hidden)
    reasons = Counter(_kind(why) for state, _, why, _ in hidden if state == "waiting")
    why = ", ".join(f"{n} for {kind}" for kind, n in reasons.most_common())
    parts = [f"{n} {state}" + (f" ({why})" if state == "waiting" and why else "")
             for state, n in states.most_common()]
    return f"... and {len(hidden)} more: " + ", ".join(parts)


def _kind(reason: str) -> str:
    first = reason.split(" ", 1)[0].rstrip(":").lower()
    return {"throttled": "the load", "resource": "a resource", "attempt": "a retry"}.get(first, "a lock")
