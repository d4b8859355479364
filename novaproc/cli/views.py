"""Views of a run: the live, plain and JSON progress views, the summary and the JUnit report.

Everything here only formats; the CLI decides where it goes. rich is imported lazily by the
live view so that plain and JSON output start fast.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from novaproc.cli.text import format_duration, one_line, plain_text
from novaproc.errors import ExitCode
from novaproc.messages import (
    ALLOWED_FAILURE,
    Event,
    Level,
    MergeDone,
    Message,
    Phase,
    RunStarted,
    TaskChanged,
    TaskState,
)
from novaproc.run.outcome import describe_failure

if TYPE_CHECKING:  # only types: `plan` must not pay for importing the run machinery
    from novaproc.run.outcome import RunOutcome, TaskRecord


# ---------------------------------------------------------------- run views

MARKS = {"queued": "·", "waiting": "…", "running": "▶", "done": "✓", "failed": "✗",
         "skipped": "-", "cancelled": "⊘"}
SUMMARY_ROWS = 40


class View:
    """Consumes the supervisor's events and writes what the user should see to `out`."""

    def __init__(self, out: TextIO, err: TextIO, total: int,
                 log_path: Callable[[str], Path] | None = None) -> None:
        self.out, self.err, self.total = out, err, total
        self.log_path = log_path  # where a failed task's output is, to show its end
        self._ended: set[str] = set()  # a set: a task run again by the merge protocol ends twice
        self.started = time.monotonic()

    def handle(self, event: Event) -> None:
        payload = event.payload
        if isinstance(payload, TaskChanged) and payload.state.finished:
            self._ended.add(event.task_id or "")
        if isinstance(payload, Message) and payload.level in (Level.WARNING, Level.ERROR):
            self.warn(payload)
        self.show(event)

    @property
    def finished(self) -> int:
        return len(self._ended)

    def warn(self, message: Message) -> None:
        self.err.write(f"novaproc: {message.level}: {one_line(message.text)}\n")
        self.err.flush()

    def show(self, event: Event) -> None:
        """Render one event; the default view shows nothing but warnings."""

    def stop(self) -> None:
        """The run ended without an outcome to show: leave the terminal as it was."""

    def close(self, outcome: RunOutcome) -> None:
        self.out.write(summary_table(outcome, self.log_path) + "\n")
        self.out.flush()


class QuietView(View):
    """--quiet: only warnings, errors and the final summary."""


class PlainView(View):
    """Off a terminal (cron, pipes, files): one plain line per event, no escapes."""

    def show(self, event: Event) -> None:
        line = self._line(event)
        if line:
            self.out.write(plain_text(line) + "\n")
            self.out.flush()

    def _line(self, event: Event) -> str | None:
        d = event.payload
        if isinstance(d, RunStarted):
            return (f"novaproc: run {event.run_id}: {d.tasks} task(s), {d.strategy}, "
                    f"{d.max_parallel} slot(s), estimated speedup {d.estimated_speedup:.1f}x")
        if isinstance(d, Phase | MergeDone):
            return f"novaproc: {phase_text(d)}"
        if not isinstance(d, TaskChanged):
            return None
        if d.rerun:  # after the tasks, in the landing: not counted again, the counter stays put
            took = f" in {format_duration(d.duration)}" if d.duration is not None else ""
            return f"novaproc: {event.task_id}: re-run on the merged result: {d.state}{took}"
        head = f"[{self.finished}/{self.total}] {d.state:<9} {event.task_id}"
        if d.state is TaskState.RUNNING:
            return head + (f" (attempt {d.attempt})" if (d.attempt or 1) > 1 else "")
        if d.state in (TaskState.WAITING, TaskState.SKIPPED, TaskState.CANCELLED):
            return head + (f": {one_line(d.reason)}" if d.reason else "")
        extra = f" in {format_duration(d.duration or 0.0)}"
        if d.state is TaskState.FAILED:
            allowed = f" ({ALLOWED_FAILURE})" if d.reason == ALLOWED_FAILURE else ""
            extra += f": {failure_text(d)}{allowed}"
            if self.log_path is not None:
                extra += "".join(f"\n    {line}" for line in
                                 output_end(self.log_path, event.run_id, event.task_id or ""))
        return head + extra


class JsonView(View):
    """--json: one JSON object per event, then a summary object."""

    def warn(self, message: Message) -> None:
        pass  # the message event itself carries it

    def show(self, event: Event) -> None:
        self.out.write(json.dumps(event.to_json()) + "\n")
        self.out.flush()

    def close(self, outcome: RunOutcome) -> None:
        self.out.write(json.dumps(summary_json(outcome)) + "\n")
        self.out.flush()


def phase_text(d: Phase | MergeDone) -> str:
    """A step after the tasks, as a line: what it does, or how it ended and in how long."""
    if isinstance(d, Phase):
        return one_line(d.text) + (f" in {format_duration(d.seconds)}" if d.seconds is not None else "")
    return landed_text(d)


def landed_text(merge: MergeDone) -> str:
    """What landed where, or that nothing did."""
    target = merge.target or "the target"
    left = f"; {len(merge.left_out)} left out" if merge.left_out else ""
    if not merge.merged or merge.waiting_branch:
        where = f"; the merged result waits on {merge.waiting_branch}" if merge.waiting_branch else ""
        return f"nothing landed on {target}{where}{left}"
    verified = {True: ", verified", False: ", verify failed", None: ""}[merge.verified]
    return (f"landed {len(merge.merged)} result(s) on {target} at {(merge.commit or '')[:12]}"
            f"{verified}{left}")


def failure_text(d: TaskChanged) -> str:
    return one_line(describe_failure(d.error, d.signal, d.exit_code))


TAIL_LINES = 10  # of a failed task's output, in the views and the summary
TAILED_TASKS = 3  # failed tasks whose output ends the summary


def output_end(log_path: Callable[[str], Path], run_id: str, task_id: str) -> list[str]:
    """The last lines a failed task printed (made safe to show; of a line rewritten with `\r`,
    its last state), then where all of it is."""
    lines = [line[:200] for line in shown_lines(_raw_tail(log_path(task_id), 16384))][-TAIL_LINES:]
    return [*(f"| {line}" for line in lines), f"(all its output: novaproc logs {run_id} {task_id})"] \
        if lines else []


def summary_table(outcome: RunOutcome, log_path: Callable[[str], Path] | None = None) -> str:
    """The end-of-run table (failures first, long runs cut), the end of the first failed tasks'
    output, and the speedup line."""
    order = {"failed": 0, "cancelled": 1, "skipped": 2, "waiting": 3, "queued": 3, "running": 3,
             "done": 4}
    recs = sorted(outcome.records.values(), key=lambda r: order.get(r.state, 3))
    width = max([4, *(len(r.task.id) for r in recs[:SUMMARY_ROWS])])
    states = [f"{r.state} (allowed)" if r.state == "failed" and r.task.allow_failure else str(r.state)
              for r in recs[:SUMMARY_ROWS]]
    state_width = max([9, *map(len, states)])
    lines = [f"{'Task':<{width}}  {'Status':<{state_width}}  {'Attempts':>8}  Duration"]
    for r, state in zip(recs[:SUMMARY_ROWS], states, strict=True):
        note = f"  {one_line(r.failure)}" if r.state == "failed" else ""
        lines.append(f"{r.task.id:<{width}}  {state:<{state_width}}  {r.all_attempts:>8}  "
                     f"{format_duration(r.run_time)}{note}")
    if len(recs) > SUMMARY_ROWS:
        rest = recs[SUMMARY_ROWS:]
        counts = ", ".join(f"{n} {s}" for s, n in sorted(Counter(str(r.state) for r in rest).items()))
        lines.append(f"... and {len(rest)} more ({counts})")
    for r in [r for r in recs if r.state == "failed"][:TAILED_TASKS] if log_path else ():
        if end := output_end(log_path, outcome.run_id, r.task.id):
            lines += [f"{r.task.id} failed; the end of its output:", *(f"    {line}" for line in end)]
    if outcome.merge is not None:
        lines.append(landed_text(outcome.merge))
    lines.append(_times_line(outcome))
    lines += [f"note: {note}" for note in outcome.notes]
    return plain_text("\n".join(lines))


def _times_line(outcome: RunOutcome) -> str:
    """Where the wall time went: the tasks (whose speedup this is), then landing and verify."""
    line = (f"wall {format_duration(outcome.wall)}, task time {format_duration(outcome.task_time)}, "
            f"speedup {outcome.speedup:.2f}x (estimated {outcome.estimated_speedup:.1f}x)")
    times = outcome.times
    if outcome.merge is None or "tasks" not in times:
        return line
    verify = f" (verify {format_duration(times['verify'])})" if times.get("verify") else ""
    return (line + f"; tasks {format_duration(times['tasks'])}, "
            f"landing {format_duration(times.get('landing', 0.0))}{verify}")


def summary_json(outcome: RunOutcome) -> dict[str, object]:
    return {
        "event": "summary", "run_id": outcome.run_id, "exit_code": int(outcome.exit_code),
        "wall": round(outcome.wall, 3), "task_time": round(outcome.task_time, 3),
        "speedup": round(outcome.speedup, 2), "estimated_speedup": round(outcome.estimated_speedup, 2),
        "notes": list(outcome.notes), "times": {k: round(v, 3) for k, v in outcome.times.items()},
        "tasks": {tid: {"state": str(r.state), "attempts": r.all_attempts, "duration": round(r.run_time, 3),
                        "exit_code": r.exit_code, "error": r.error, "value": r.value}
                  for tid, r in outcome.records.items()},
    }


def write_junit(outcome: RunOutcome, path: Path, log_path: Callable[[str], Path], *,
                verify: bool = False) -> None:
    """A JUnit XML report for CI systems: one test case per task, then one for the landing of
    the results and one for `verify` (when set), failed when they failed (exit 3 and 4)."""
    import xml.etree.ElementTree as ET

    suite = ET.Element("testsuite", name="novaproc", time=f"{outcome.wall:.3f}")
    cases = [_task_case(r, log_path) for r in outcome.records.values()]
    if outcome.merge is not None:
        cases.append(("landing", 0.0, _landing_failure(outcome.merge), None))
        if verify:
            cases.append(("verify", 0.0, _verify_failure(outcome.merge), None))
    for name, seconds, failure, skipped in cases:
        case = ET.SubElement(suite, "testcase", classname=f"novaproc.{outcome.run_id}", name=name,
                             time=f"{seconds:.3f}")
        if failure is not None:
            ET.SubElement(case, "failure", message=plain_text(failure[0])).text = failure[1]
        elif skipped is not None:
            ET.SubElement(case, "skipped", message=plain_text(skipped[0])).text = skipped[1]
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(c[2] is not None for c in cases)))
    suite.set("skipped", str(sum(c[2] is None and c[3] is not None for c in cases)))
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


# a test case: (name, seconds, failure (message, text) or None, skipped (message, text) or None)
_Case = tuple[str, float, "tuple[str, str] | None", "tuple[str, str] | None"]


def _task_case(r: TaskRecord, log_path: Callable[[str], Path]) -> _Case:
    output = _tail(log_path(r.task.id), 4000) if r.state == "failed" else ""
    if r.state == "failed" and r.task.allow_failure:  # reported, not counted: skipped, with output
        return r.task.id, r.run_time, None, (f"failed (allowed): {r.failure}", output)
    if r.state == "failed":
        return r.task.id, r.run_time, (r.failure, output), None
    if r.state in ("skipped", "cancelled"):
        return r.task.id, r.run_time, None, (str(r.state), "")
    return r.task.id, r.run_time, None, None


def _landing_failure(merge: MergeDone) -> tuple[str, str] | None:
    """Why results did not land (exit 3): the conflicting files, what was left out."""
    if merge.exit_code != ExitCode.MERGE:
        return None
    lines = [f"{task}: conflicts in {', '.join(files)}" for task, files in merge.conflicts.items()]
    lines += [f"{task}: left out: {why}" for task, why in merge.left_out.items()
              if task not in merge.conflicts]
    if merge.waiting_branch:
        lines.append(f"the merged result waits on branch {merge.waiting_branch}")
    return (lines[0] if lines else "results could not all be merged", "\n".join(lines))


def _verify_failure(merge: MergeDone) -> tuple[str, str] | None:
    """Why verify failed on the merged result (exit 4): the task it blamed."""
    if merge.exit_code != ExitCode.VERIFY:
        return None
    why = f"verify failed; bisection blamed {merge.culprit}" if merge.culprit else "verify failed"
    return why, "\n".join(f"{task}: left out: {reason}" for task, reason in merge.left_out.items())


def _tail(path: Path, limit: int) -> str:
    """The last `limit` bytes of a log as text, as shown: see plain_text."""
    return plain_text(_raw_tail(path, limit))


def _raw_tail(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            start = max(0, f.tell() - limit)
            f.seek(start)
            data = f.read()
    except OSError:
        return ""
    if start:  # not from a character's middle: skip UTF-8 continuation bytes
        data = data.lstrip(bytes(range(0x80, 0xC0)))
    return data.decode("utf-8", "replace")


def shown_lines(text: str) -> list[str]:
    """Output lines as a terminal would leave them: a line rewritten with `\r` (a progress bar)
    at its last state; as text (plain_text); blank ones dropped."""
    lines = (plain_text(line.rstrip("\r").rsplit("\r", 1)[-1]).rstrip() for line in text.split("\n"))
    return [line for line in lines if line.strip()]


def last_line(path: Path) -> str:
    """The last non-empty line of a log, for the live view."""
    lines = shown_lines(_raw_tail(path, 512))
    return lines[-1].strip()[:120] if lines else ""


def escape_markup(text: str) -> str:
    """Text from tasks, made literal for rich: "[/x]" would fail the render, "[tasks.a]" vanish."""
    from rich.markup import escape

    return escape(text)
