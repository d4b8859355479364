"""The conflict protocol where a task's base is built: when the results of the tasks it depends
on conflict, the later of them runs again on top of the earlier ones (as one by one it would
have), and the task starts once it has. This keeps the book of who waits for which re-run.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BaseRebuilds:
    waiting: dict[str, str] = field(default_factory=dict)  # task -> the parent it waits for
    pending: dict[str, str] = field(default_factory=dict)  # parent to run again -> on which commit
    running: dict[str, str] = field(default_factory=dict)  # parent running again -> on which commit

    def ask(self, task: str, parent: str, base: str) -> None:
        """`task` waits until `parent` ran again on `base` (unless a re-run is asked already)."""
        self.waiting[task] = parent
        if parent not in self.running:
            self.pending.setdefault(parent, base)

    def start(self, parent: str) -> str:
        """`parent` starts again now; the commit it runs on."""
        base = self.running[parent] = self.pending.pop(parent)
        return base

    def done(self, parent: str) -> tuple[str, list[str]]:
        """`parent` ended its re-run: the commit it ran on, and the tasks that waited for it."""
        base = self.running.pop(parent)
        waiters = [t for t, p in self.waiting.items() if p == parent]
        for task in waiters:
            del self.waiting[task]
        return base, waiters

    def drop(self) -> list[str]:
        """The run stops: nothing more runs again; the tasks that waited."""
        waiters = list(self.waiting)
        self.waiting.clear()
        self.pending.clear()
        return waiters
