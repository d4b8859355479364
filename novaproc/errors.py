"""Exceptions, named by who is at fault, each carrying the exit code the CLI returns.

UsageError / ConfigError: the user's input is wrong; fix it and try again (exit 2).
EnvironmentFault: novaproc could not do its job here (git, locks, disk); see the message.
InternalError: a bug in novaproc; please report it with the message.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    MERGE = 3
    VERIFY = 4
    BUSY = 75
    SIGHUP = 129
    SIGINT = 130
    SIGTERM = 143

    @property
    def stopped_by_signal(self) -> bool:
        return self in (ExitCode.SIGHUP, ExitCode.SIGINT, ExitCode.SIGTERM)


class NovaError(Exception):
    """Base of every error novaproc reports to the user without a traceback."""

    exit_code: ExitCode = ExitCode.FAILED


class UsageError(NovaError):
    """Bad command-line usage, such as an unknown run id. Fix the command."""

    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """An invalid tasks or settings file. The message names file, task and field."""

    def __init__(
        self, file: str, problem: str, *, task: str | None = None, field: str | None = None
    ) -> None:
        self.file, self.task, self.field, self.problem = file, task, field, problem
        where = [file]
        if task is not None:
            where.append(f"task {task!r}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{': '.join(where)}: {problem}")


class BusyError(NovaError):
    """Another run holds what this one needs and the caller asked not to wait."""

    exit_code = ExitCode.BUSY


class EnvironmentFault(NovaError):
    """novaproc could not run here: git, locks, disk or permissions. The message says what."""


class ObjectsMissing(NovaError):
    """A cluster's worker lacks the commits a task's bundle builds on: it needs a complete one."""


class InternalError(NovaError):
    """A bug in novaproc: an impossible state was reached. Please report it."""

    def __init__(self, what: str) -> None:
        super().__init__(f"internal error: {what} [this is a bug, please report it]")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ' (did you mean "x"?)' suffix when `word` is close to one of `choices`."""
    import difflib  # not at the top: every command imports this module, few make a typo

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in choices}
        if word.lower() in lowered:
            close = [lowered[word.lower()]]
    return f' (did you mean "{close[0]}"?)' if close else ""
