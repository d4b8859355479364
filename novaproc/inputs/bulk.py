"""Building many long-lived objects at once: the tasks of a file, their plan.

100,000 tasks and their plan are millions of objects, nearly none in a reference cycle, and
all kept to the end of the process. The cyclic collector would walk them again at every full
collection while they are built (a fifth of the time to plan 100,000 tasks), and at every one
after. So it is paused while they are built, and what survives is frozen: left out of every
later collection. Reference counting still frees what is dropped.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection inside; on success, what exists is frozen."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.freeze()
    finally:
        if enabled:
            gc.enable()
