"""Text the commands print whatever runs: durations, the plan, and what came from tasks files and
tasks made safe to show (escape sequences and control bytes dropped). Loads nothing of the run.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from novaproc.planning.plan import Plan


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


def render_plan(plan: Plan) -> str:
    lines = [
        f"Execution strategy: {plan.strategy}",
        f"  Reason: {plan.reason}",
        f"  Safety level: {plan.safety}",
        f"  Estimated speedup: {plan.estimated_speedup:.1f}x   ({plan.slots} slots)",
        f"  Isolation: {plan.isolation}",
    ]
    lines += [f"  Warning: {w}" for w in plan.warnings]
    width = max(len(t.id) for t in plan.tasks)
    lines.append(f"Tasks ({len(plan.tasks)}):")
    for i, t in enumerate(plan.tasks, 1):
        extra = [] if t.kind == "normal" else [f"kind {t.kind}: {t.kind_reason}"]
        after = plan.implicit_after(t.id)
        if t.depends_on:
            extra.append("depends on " + ", ".join(t.depends_on))
        if after:
            extra.append("after " + ", ".join(after))
        suffix = f"  ({'; '.join(extra)})" if extra else ""
        lines.append(f"  {i}. {t.id:<{width}}  {t.label}{suffix}")
    if plan.strategy == "dag":
        lines.append("Layers:")
        labels = {t.id: t.label for t in plan.tasks}
        for n, layer in enumerate(plan.layers(), 1):
            waits = f" (depends on layer {n - 1})" if n > 1 else ""
            lines.append(f"  Layer {n}: {', '.join(labels[t] for t in layer)}{waits}")
    if plan.conflicts:
        lines.append(f"Conflicts ({len(plan.conflicts)}), run in this order:")
        for c in plan.conflicts:
            what = ", ".join(c.paths) if c.paths else f"both are {c.why} tasks"
            lines.append(f"  {c.first} -> {c.second}: {what} ({c.why})")
    return plain_text("\n".join(lines))  # descriptions and paths are shown, never obeyed


# escape sequences (CSI, OSC, two-byte) and the control characters that a terminal would act
# on or an XML parser refuse: a task's output is shown, never obeyed
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffe\uffff]")


def plain_text(text: str) -> str:
    """`text` without escape sequences and control characters, tabs and newlines kept."""
    return _CONTROLS.sub("", _ESCAPES.sub("", text))


def one_line(text: str) -> str:
    """plain_text on one line, for a table cell or an event's line."""
    return " ".join(plain_text(text).split())
