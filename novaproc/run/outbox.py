"""The supervisor's events on their way to the journal and the views: sent as they happen, or,
while held (a step of the run loop), kept and sent together when released, so a freed slot is
handed out before the news of the task that freed it is written."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from novaproc.messages import Event, Payload


class Outbox:
    def __init__(self, run_id: str, send: Callable[[Sequence[Event]], None]) -> None:
        self.run_id, self._send = run_id, send
        self._held: list[Event] | None = None

    def emit(self, payload: Payload, task_id: str | None = None) -> None:
        """Stamp the event now; send it now, or keep it while held."""
        event = Event(self.run_id, time.time(), payload, task_id)
        if self._held is None:
            self._send([event])
        else:
            self._held.append(event)

    def hold(self) -> None:
        if self._held is None:
            self._held = []

    def release(self, *, hold: bool = True) -> None:
        """Send what was kept, in order, at once; go on holding unless told not to."""
        held, self._held = self._held, ([] if hold and self._held is not None else None)
        if held:
            self._send(held)
