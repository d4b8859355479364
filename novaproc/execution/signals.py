"""SIGINT, SIGTERM and SIGHUP for a run's supervisor: a signal only records itself and wakes the
loop (through a pipe the loop waits on), and the loop decides what to stop, in its own time.
"""

from __future__ import annotations

import contextlib
import os
import signal
from types import TracebackType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupts:
    """While entered, SIGINT, SIGTERM and SIGHUP (a closed terminal: as SIGTERM) are caught:
    `first` is the signal that stops the run, `take()` returns each new one once (with whether
    it came after another), and `fileno()` becomes readable when one arrives."""

    def __init__(self) -> None:
        self.first: int | None = None
        self._pending: tuple[int, bool] | None = None
        self._read, self._write = os.pipe()
        for fd in (self._read, self._write):
            os.set_blocking(fd, False)
        self._old: dict[int, object] = {}
        self._old_fd = -1

    def fileno(self) -> int:
        return self._read

    def _handler(self, signum: int, frame: object) -> None:
        again = self.first is not None
        self.first = self.first or signum
        self._pending = (signum, again)

    def take(self) -> tuple[int, bool] | None:
        """The signal that arrived since the last call (and whether it is a second one)."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 512):
                pass
        pending, self._pending = self._pending, None
        return pending

    def __enter__(self) -> Interrupts:
        self._old = {s: signal.signal(s, self._handler) for s in STOP_SIGNALS}
        self._old_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        signal.set_wakeup_fd(self._old_fd)
        for s, handler in self._old.items():
            signal.signal(s, handler)  # type: ignore[arg-type]
        os.close(self._read)
        os.close(self._write)
