"""Events as the supervisor writes them, for journals made by hand."""

from __future__ import annotations

from novaproc.messages import Event

_EVENT_DEFAULTS: dict[str, dict[str, object]] = {
    "run_started": {"pid": 0, "strategy": "simple_parallel", "estimated_speedup": 1.0, "max_parallel": 1,
                    "tasks": 0},
    "run_finished": {"wall": 0.0, "task_time": 0.0},
    "message": {"level": "info", "text": ""},
}


def event(run_id: str, at: float, kind: str, task: str | None = None, state: object = None,
          **data: object) -> Event:
    """An Event as the supervisor would write it, with the fields a test leaves out filled in."""
    fields = {**_EVENT_DEFAULTS.get(kind, {}), **data}
    if kind == "run_finished" and "state" not in fields:
        code = fields.get("exit_code")
        fields["state"] = "done" if code == 0 else "cancelled" if code in (130, 143) else "failed"
    return Event.from_json({"event": kind, "run_id": run_id, "time": at, "task": task,
                            "state": state, **fields})
