"""Text the commands print whatever runs: durations, the plan, and what came from tasks files and
tasks made safe to show (escape sequences and control bytes dropped). Loads nothing of the run.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from novaproc.planning.plan import Plan


EXIT_CODES = """exit codes:
  0    every task succeeded (merged and verified)
  1    a task failed or timed out
  2    bad usage or an invalid tasks/config file; nothing ran
  3    results could not all be merged
  4    verify failed on the merged result
  75   busy (--if-busy skip, lock --timeout)
  129  hung up (SIGHUP)   130  interrupted (SIGINT)   143  terminated (SIGTERM)
"""


def format_duration(seconds: float) -> str:
    """'0.4s', '12s', '2m34s', '1h02m'."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def render_plan(plan: Plan, executor: str | None = None) -> str:
    """The plan as text; `executor`: a line on where tasks run, for a run on a cluster."""
    lines = [
        f"Execution strategy: {plan.strategy}",
        f"  Reason: {plan.reason}",
        f"  Safety level: {plan.safety}",
        f"  Estimated speedup: {plan.estimated_speedup:.1f}x   ({plan.slots} slots)",
        f"  Isolation: {plan.isolation}",
        *([f"  {executor}"] if executor else []),
    ]
    lines += [f"  Warning: {w}" for w in plan.warnings]
    lines.append(f"Tasks ({len(plan.tasks)}):")
    templates = {t.id: t.template for t in plan.tasks if t.template}
    lines += _task_lines(plan, templates)
    if plan.strategy == "dag":
        lines.append("Layers:")
        labels = {t.id: t.label for t in plan.tasks if not t.template}
        for n, layer in enumerate(plan.layers(), 1):
            waits = f" (depends on layer {n - 1})" if n > 1 else ""
            shown = _collapsed(templates, layer, labels)
            more = f", ... and {len(shown) - MAX_IN_LAYER} more" if len(shown) > MAX_IN_LAYER else ""
            lines.append(f"  Layer {n}: {', '.join(shown[:MAX_IN_LAYER])}{more}{waits}")
    if plan.conflicts:
        lines.append(f"Conflicts ({len(plan.conflicts)}), run in this order:")
        for c in plan.conflicts[:MAX_LISTED]:
            what = ", ".join(c.paths) if c.paths else f"both are {c.why} tasks"
            lines.append(f"  {c.first} -> {c.second}: {what} ({c.why})")
        if len(plan.conflicts) > MAX_LISTED:
            lines.append(f"  ... and {len(plan.conflicts) - MAX_LISTED} more (plan --json lists them all)")
    return plain_text("\n".join(lines))  # descriptions and paths are shown, never obeyed


MAX_LISTED = 20  # conflicts shown; a fan-out's template is one line whatever its count
# tasks, and names in a layer's line, shown: a plan of 100,000 tasks is read in its JSON
MAX_TASK_LINES, MAX_IN_LAYER = 1_000, 50
_FIRST_ITEMS = 3


def _task_lines(plan: Plan, templates: Mapping[str, str]) -> list[str]:
    """One line a task, and one a fan-out template: its count and first items."""
    shown = [t for i, t in enumerate(plan.tasks)
             if not t.template or i == 0 or plan.tasks[i - 1].template != t.template]
    hidden = len(shown) - MAX_TASK_LINES
    shown = shown[:MAX_TASK_LINES]
    members: dict[str, list[str]] = {}
    for t in plan.tasks:
        if t.template:
            members.setdefault(t.template, []).append(t.item or "")
    width = max(len(f"{t.template}.*" if t.template else t.id) for t in shown)
    lines = []
    for i, t in enumerate(shown, 1):
        if t.template:
            items = members[t.template]
            first = ", ".join(items[:_FIRST_ITEMS]) + (", ..." if len(items) > _FIRST_ITEMS else "")
            count = f"{len(items)} task{'s' if len(items) != 1 else ''}"
            lines.append(f"  {i}. {t.template + '.*':<{width}}  {count}, one per item: {first}")
            continue
        extra = [] if t.kind == "normal" else [f"kind {t.kind}: {t.kind_reason}"]
        after = plan.implicit_after(t.id)
        if t.depends_on:
            extra.append("depends on " + ", ".join(_collapsed(templates, t.depends_on)))
        if after:
            extra.append("after " + ", ".join(_collapsed(templates, after)))
        suffix = f"  ({'; '.join(extra)})" if extra else ""
        lines.append(f"  {i}. {t.id:<{width}}  {t.label}{suffix}")
    if hidden > 0:
        lines.append(f"  ... and {hidden} more (plan --json lists them all)")
    return lines


def _collapsed(template: Mapping[str, str], ids: Sequence[str],
               labels: Mapping[str, str] | None = None) -> list[str]:
    """`ids` (or their labels) with a fan-out's tasks as one "<template> (N tasks)"."""
    counts = Counter(template[i] for i in ids if i in template)
    out: list[str] = []
    for i in ids:
        if i not in template:
            out.append(labels.get(i, i) if labels else i)
        elif (name := template[i]) in counts:
            n = counts.pop(name)
            out.append(f"{name} ({n} task{'s' if n != 1 else ''})")
    return out


@functools.cache
def _unsafe() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Escape sequences (CSI, OSC, two-byte) and the control characters that a terminal would act
    on or an XML parser refuse: a task's output is shown, never obeyed. Compiled at first use,
    not at import (0.6 ms of every command, `lock` and `--help` too)."""
    return (re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])"),
            re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffe\uffff]"))


def plain_text(text: str) -> str:
    """`text` without escape sequences and control characters, tabs and newlines kept."""
    escapes, controls = _unsafe()
    return controls.sub("", escapes.sub("", text))


def one_line(text: str) -> str:
    """plain_text on one line, for a table cell or an event's line."""
    return " ".join(plain_text(text).split())
