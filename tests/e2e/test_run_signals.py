"""Signals and deaths around `novaproc run`: SIGINT, SIGTERM and SIGKILL to the CLI, crashing
call tasks, and a killed worker. The CLI runs in a subprocess; tasks signal that they run by
touching files; processes left behind are found by a unique marker or by the list of the
CLI's descendants taken while it ran."""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
from support.cli import run_cli, spawn_cli
from support.processes import assert_gone, marker
from support.tasks import RUN_TABLE, call_task, task, write_tasks

DEADLINE = 30.0


class LiveRun:
    """`novaproc run --json` started with Popen; its stdout lines arrive on a queue."""

    def __init__(self, tmp_path: Path, text: str, *args: str) -> None:
        path = write_tasks(tmp_path, text)
        self.stderr_path = tmp_path / "stderr"
        with self.stderr_path.open("w") as err:
            self.proc = spawn_cli("run", path, "--json", *args, cwd=tmp_path,
                                  env={"NOVA_STATE_DIR": str(tmp_path / "state")}, stderr=err,
                                  start_new_session=True)
        self.lines: list[dict] = []
        self._queue: queue.Queue[dict | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(json.loads(line))
        self._queue.put(None)

    def wait_for_event(self, predicate, timeout: float = DEADLINE) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for seen in self.lines:
                if predicate(seen):
                    return seen
            try:
                event = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no such event within {timeout}s; saw {self.lines}") from None
            if event is None:
                raise AssertionError(f"the run ended without such an event; saw {self.lines}")
            self.lines.append(event)

    def finish(self, timeout: float = DEADLINE) -> int:
        code = self.proc.wait(timeout)
        while (event := self._queue.get(timeout=5)) is not None:
            self.lines.append(event)
        return code

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def summary(self) -> dict:
        assert self.lines and self.lines[-1]["event"] == "summary", self.lines
        return self.lines[-1]

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def live(tmp_path):
    runs: list[LiveRun] = []

    def start(text: str, *args: str) -> LiveRun:
        run = LiveRun(tmp_path, text, *args)
        runs.append(run)
        return run

    yield start
    for run in runs:  # whatever the test did, leave no CLI behind
        run.kill()


def wait_for_files(*paths: Path, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        assert time.monotonic() < deadline, f"tasks did not start: {[p for p in paths if not p.exists()]}"
        time.sleep(0.05)


def cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:  # it exited meanwhile (a `touch`, say)
        return ""


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            continue
    return out


def assert_all_exit(procs: list[psutil.Process], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(procs):
        if time.monotonic() > deadline:
            left = [(p.pid, cmdline(p)) for p in alive(procs)]
            for p in alive(procs):
                with contextlib.suppress(psutil.Error):
                    p.kill()
            raise AssertionError(f"processes outlived the run: {left}")
        time.sleep(0.05)


SLEEPER = '''
import pathlib
import time


def nap(ready, seconds):
    pathlib.Path(ready).touch()
    time.sleep(seconds)
'''


def busy_tasks(tmp_path: Path, mark: str) -> tuple[str, list[Path]]:
    """Three tasks that say they run, then sleep: one with a background and a setsid'd
    grandchild, one plain, one call; and a queued task that must never start."""
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    ready = [tmp_path / f"ready-{i}" for i in range(3)]
    text = (RUN_TABLE
            + task("tree", f"sleep {mark} & setsid sleep {mark} & touch {ready[0]}; sleep {mark}")
            + task("plain", f"touch {ready[1]}; exec sleep {mark}")
            + call_task("pycall", "sleeper:nap", args=[str(ready[2]), 60])
            + task("queued", f"touch {tmp_path / 'queued-ran'}", depends_on=["plain"]))
    return text, ready


# ---------------------------------------------------------------- SIGINT, SIGTERM, SIGKILL


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_run_with_its_exit_code_and_leaves_nothing(tmp_path, live, sig, code):
    mark = marker()
    text, ready = busy_tasks(tmp_path, mark)
    run = live(text, "-j", "3")
    wait_for_files(*ready)
    family = run.descendants()
    run.proc.send_signal(sig)
    assert run.finish() == code, run.stderr()
    states = {tid: t["state"] for tid, t in run.summary()["tasks"].items()}
    assert states == {"tree": "cancelled", "plain": "cancelled", "pycall": "cancelled",
                      "queued": "cancelled"}
    assert not (tmp_path / "queued-ran").exists()
    assert "Traceback" not in run.stderr()
    assert_gone(mark)
    assert_all_exit(family)


def test_an_interrupted_run_in_place_does_not_speak_of_branches(tmp_path, live):
    ready = tmp_path / "ready"
    mark = marker()
    run = live(RUN_TABLE + task("napping", f"touch {ready}; sleep {mark}"))
    wait_for_files(ready)
    run.proc.send_signal(signal.SIGINT)
    assert run.finish() == 130, run.stderr()
    assert_gone(mark)
    notes = " ".join(run.summary().get("notes", []))
    assert "branch" not in notes


def test_a_second_sigint_kills_without_waiting_for_the_grace_period(tmp_path, live):
    mark, ready = marker(), tmp_path / "ready"
    text = (RUN_TABLE.replace("kill_grace = 1", "kill_grace = 120")
            + task("deaf", f"trap '' TERM; touch {ready}; sleep {mark}"))
    run = live(text)
    wait_for_files(ready)
    run.proc.send_signal(signal.SIGINT)
    run.wait_for_event(lambda e: e["event"] == "message" and "SIGINT" in e.get("text", ""))
    time.sleep(0.3)  # the task ignores SIGTERM: it is still running, the grace is 120 s
    assert run.proc.poll() is None
    run.proc.send_signal(signal.SIGINT)
    assert run.finish(timeout=60) == 130, run.stderr()  # well before the 120 s grace ran out
    assert_gone(mark)


def test_sigkill_to_the_cli_leaves_no_task_or_worker_behind(tmp_path, live):
    mark = marker()
    text, ready = busy_tasks(tmp_path, mark)
    run = live(text, "-j", "3")
    wait_for_files(*ready)
    family = run.descendants()
    assert len([p for p in family if mark in cmdline(p)]) >= 4, [cmdline(p) for p in family]
    run.proc.kill()
    run.proc.wait()
    assert_gone(mark, timeout=10)
    assert_all_exit(family, timeout=10)


# ---------------------------------------------------------------- deaths inside the run


CRASHES = '''
import ctypes
import os


def exit3():
    os._exit(3)


def segfault():
    ctypes.string_at(0)


def kill9():
    os.kill(os.getpid(), 9)


def fine():
    return "fine"
'''


def test_crashing_call_tasks_fail_alone_and_the_run_ends(tmp_path):
    (tmp_path / "crashes.py").write_text(CRASHES)
    text = (RUN_TABLE + call_task("exits", "crashes:exit3") + call_task("segv", "crashes:segfault")
            + call_task("killed", "crashes:kill9") + call_task("fine1", "crashes:fine")
            + task("fine2", "sleep 0.3") + call_task("after", "crashes:fine", depends_on=["fine1"]))
    proc = run_cli("run", write_tasks(tmp_path, text), "--json", "-j", "2", cwd=tmp_path,
                   env={"NOVA_STATE_DIR": str(tmp_path / "state")}, timeout=60)
    assert proc.returncode == 1, proc.stderr
    tasks = json.loads(proc.stdout.splitlines()[-1])["tasks"]
    assert {tid: t["state"] for tid, t in tasks.items()} == {
        "exits": "failed", "segv": "failed", "killed": "failed",
        "fine1": "done", "fine2": "done", "after": "done"}
    assert "3" in tasks["exits"]["error"]
    assert "SIGSEGV" in tasks["segv"]["error"]
    assert "SIGKILL" in tasks["killed"]["error"]
    assert tasks["fine1"]["value"] == "fine"


def test_a_killed_worker_fails_its_task_and_the_rest_of_the_run_finishes(tmp_path, live):
    mark = marker()
    worker_file, stamps = tmp_path / "worker.pid", tmp_path / "others"
    text = (RUN_TABLE
            + task("victim", f"echo $PPID > {worker_file}.tmp; mv {worker_file}.tmp {worker_file}; "
                   f"exec sleep {mark}")
            + task("bystander", f"sleep 0.5; echo bystander >> {stamps}")
            + task("later", f"echo later >> {stamps}", depends_on=["bystander"])
            + task("needs_victim", "true", depends_on=["victim"]))
    run = live(text, "-j", "2")
    wait_for_files(worker_file)
    worker = psutil.Process(int(worker_file.read_text()))
    assert worker.pid in {p.pid for p in run.descendants()}, "the worker is not the CLI's descendant"
    assert worker.name() != "sh"
    worker.kill()
    assert run.finish() == 1, run.stderr()
    tasks = run.summary()["tasks"]
    assert {tid: t["state"] for tid, t in tasks.items()} == {
        "victim": "failed", "bystander": "done", "later": "done", "needs_victim": "skipped"}
    error = tasks["victim"]["error"]
    assert "worker" in error and "died" in error and "SIGKILL" in error
    assert sorted(stamps.read_text().split()) == ["bystander", "later"]
    assert_gone(mark)


def test_a_killed_worker_leaves_no_setsid_descendant_behind(tmp_path, live):
    mark = marker()
    worker_file = tmp_path / "worker.pid"
    text = RUN_TABLE + task("victim", f"setsid sleep {mark} & echo $PPID > {worker_file}.tmp; "
                                      f"mv {worker_file}.tmp {worker_file}; sleep {mark}")
    run = live(text)
    wait_for_files(worker_file)
    deadline = time.monotonic() + DEADLINE
    while len([p for p in psutil.process_iter(["cmdline"]) if mark in " ".join(p.info["cmdline"] or ())]) < 2:
        assert time.monotonic() < deadline, "the victim's sleeps did not start"
        time.sleep(0.05)
    psutil.Process(int(worker_file.read_text())).kill()
    assert run.finish() == 1, run.stderr()
    assert_gone(mark, timeout=5)
