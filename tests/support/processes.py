"""Processes a test started: found by a unique marker in their command line, or by their run."""

from __future__ import annotations

import contextlib
import random
import time

import psutil


def marker() -> str:
    """A unique, sleep-able duration: `sleep <marker>` names a process no other test starts."""
    return f"{random.randint(300, 899)}.{random.randint(10**7, 10**8 - 1)}"


def marker_procs(mark: str) -> list[psutil.Process]:
    """Live (not zombie) processes whose command line contains `mark`."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and mark in " ".join(p.info["cmdline"] or ()):
                found.append(p)
        except psutil.Error:
            continue
    return found


def sleepers(mark: str) -> list[psutil.Process]:
    """The `sleep <mark>` processes themselves (not the shells that started them)."""
    return [p for p in marker_procs(mark) if _cmdline(p)[:1] in (["sleep"], ["/usr/bin/sleep"])]


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def assert_gone(mark: str, timeout: float = 10.0) -> None:
    """Within `timeout`, no process carries `mark`; any left are killed, then the test fails."""
    deadline = time.monotonic() + timeout
    while marker_procs(mark):
        if time.monotonic() > deadline:
            left = [p.info["cmdline"] for p in marker_procs(mark)]
            for p in marker_procs(mark):  # do not leak them into the rest of the suite
                with contextlib.suppress(psutil.Error):
                    p.kill()
            raise AssertionError(f"processes with marker {mark} remain: {left}")
        time.sleep(0.05)


def task_processes(run_id: str) -> list[psutil.Process]:
    """Live processes carrying the run's mark in their environment (tasks and their descendants)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get("NOVA_RUN_ID") == run_id:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found
