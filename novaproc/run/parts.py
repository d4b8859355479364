"""What a supervisor drives, handed to it whole: how jobs run, where tasks run, what they hold,
where events and output go, its clock; and what a resumed run keeps of its earlier supervisors.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from novaproc.execution.signals import Interrupts

if TYPE_CHECKING:  # names for the annotations only: each module a run need not load saves its start
    from novaproc.execution.interface import Executor
    from novaproc.execution.throttle import Throttle
    from novaproc.isolation.interface import Isolation
    from novaproc.locking.gate import Gate
    from novaproc.messages import Event


@dataclass(frozen=True)
class RunParts:
    """What a supervisor drives: how jobs run, where tasks run, what they hold beyond a slot,
    where events and output go, and the clock its timers read."""

    run_id: str
    executor: Executor
    isolation: Isolation
    emit: Callable[[Sequence[Event]], None]  # events in order, written at once
    log_path: Callable[[str], Path]
    gate: Gate | None = None
    throttle: Throttle | None = None  # default: the settings' limits
    interrupts: Interrupts = field(default_factory=Interrupts)
    clock: Callable[[], float] = time.monotonic
    # set while the run's tasks are being stopped (fail_fast, a signal): a worktree_setup under
    # way for a task that will not run ends then; cleared for the landing, whose verify it is not
    stopping: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class Earlier:
    """What a resumed run keeps of its earlier supervisors: results (commit, duration) of tasks
    that succeeded unchanged, and how many attempts each task made."""

    kept: Mapping[str, tuple[str | None, float]] = field(default_factory=dict)
    attempts: Mapping[str, int] = field(default_factory=dict)
