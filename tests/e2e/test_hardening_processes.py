"""Hardening of a run's processes, signals and files, end to end through the real CLI.

Each test pins one fixed defect (its commit in the test's docstring): a task child that drops
novaproc's marks and outlives its killed worker; a task that outlives a supervisor dying of an
internal error; a killed forkserver failing healthy tasks; SIGHUP; the report of an escalation
from SIGTERM to SIGKILL; escape sequences from a tasks file reaching the terminal; and the state
dir's modes and planted symlinks. Tasks run in place (outside git); processes left behind are
found by a unique marker in their command line.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from support.cli import run_cli, spawn_cli
from support.env import clean_env
from support.processes import assert_gone, marker, sleepers
from support.sandbox import Ran, Sandbox
from support.tasks import NO_THROTTLE, run_table, task, write_tasks
from support.waiting import wait_for_file, wait_until


def tasks_in_place(folder: Path, *tasks: str, **run: object) -> Path:
    """A tasks file in `folder` (outside git): [run] with no throttle, isolation "none", `run`."""
    return write_tasks(folder, run_table(**NO_THROTTLE, isolation="none", **run) + "".join(tasks))


def open_files(pid: int) -> dict[int, str]:
    """What process `pid` holds open: descriptor -> what it points to (a path, pipe:[inode] ...)."""
    return {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}


def python_ancestor(proc: psutil.Process) -> psutil.Process:
    """The nearest ancestor of a task's process that is a Python interpreter: its worker."""
    parent = proc.parent()
    while parent is not None and "python" not in " ".join(parent.cmdline()):
        parent = parent.parent()
    assert parent is not None, f"no Python process above {proc.cmdline()}"
    return parent


class Background:
    """`novaproc ARGS` started with the sandbox's settings, its output to files: a process that
    outlives it and holds its pipes (what the defects pinned here leave) cannot hang the test."""

    def __init__(self, box: Sandbox, folder: Path, *args: str | os.PathLike[str]) -> None:
        self.out, self.err = folder / "cli.out", folder / "cli.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = spawn_cli(*args, cwd=folder, env=box.env, stdout=out, stderr=err)
        self.pid = self.proc.pid

    def finish(self, timeout: float = 30) -> Ran:
        try:
            code = self.proc.wait(timeout)
        finally:
            self.kill()
        return Ran(code, self.out.read_text(), self.err.read_text())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def background(box: Sandbox, tmp_path: Path) -> Iterator[Callable[..., Background]]:
    """background(ARGS...): the CLI started in tmp_path; whatever the test does, killed at its end."""
    started: list[Background] = []

    def start(*args: str | os.PathLike[str]) -> Background:
        started.append(Background(box, tmp_path, *args))
        return started[-1]

    yield start
    for run in started:
        run.kill()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# ---------------------------------------------------------------- a killed worker (78c2873)


def test_a_task_child_without_novaproc_marks_dies_with_its_killed_worker(tmp_path, background):
    """78c2873: a child that drops NOVA_JOB and NOVA_RUN_ID and calls setsid escaped the hunt by
    marks when its worker was killed; the supervisor, a subreaper, now adopts and ends it."""
    hidden, visible = marker(), marker()
    tasks = tasks_in_place(tmp_path, task(
        "victim", f"env -u NOVA_JOB -u NOVA_RUN_ID setsid sleep {hidden} & sleep {visible}"))
    run = background("run", tasks, "--json")
    wait_until(lambda: sleepers(hidden) and sleepers(visible), "both sleeps to run")
    worker = python_ancestor(sleepers(visible)[0])
    assert worker.pid in {p.pid for p in psutil.Process(run.pid).children(recursive=True)}
    worker.kill()
    ran = run.finish(timeout=30)
    assert ran.code == 1, ran
    assert ran.states() == {"victim": "failed"}
    assert "worker process died" in ran.summary["tasks"]["victim"]["error"]
    assert_gone(hidden, timeout=5)
    assert_gone(visible, timeout=5)


# ---------------------------------------------------------------- an internal error (78c2873)

BREAKING_DRIVER = '''
"""`novaproc ARGS`, with a supervisor that fails in the scheduling pass that handed out its first
job. The new worker is held (SIGSTOP) until shutdown's kill pass has run, so that it starts the
job only then: the interleaving a busy machine gives, made certain."""
import os
import signal
import sys

if __name__ == "__main__":  # the forkserver imports this module again: plant nothing there
    try:
        from novaproc.execution import pool
    except ImportError:  # the flat layout, before the packages
        from novaproc import pool
    try:
        from novaproc.cli.main import main
    except ImportError:
        from novaproc.cli import main
    Pool = pool.WorkerPool
    real_spawn, real_submit, real_signal_tree = Pool._spawn, Pool.submit, Pool._signal_tree
    held = []

    def spawn(self):
        slot = real_spawn(self)
        os.kill(slot.process.pid, signal.SIGSTOP)
        held.append(slot.process.pid)
        return slot

    def submit(self, job):
        real_submit(self, job)
        raise RuntimeError("planted: the supervisor breaks in the pass that handed out a job")

    def signal_tree(self, slot, sig):
        real_signal_tree(self, slot, sig)
        for pid in held:
            os.kill(pid, signal.SIGCONT)

    Pool._spawn, Pool.submit, Pool._signal_tree = spawn, submit, signal_tree
    sys.exit(main(sys.argv[1:]))
'''


def test_a_task_handed_out_as_the_supervisor_fails_does_not_outlive_it(tmp_path):
    """78c2873: shutdown killed the worker that was only now starting the job it had been handed
    (after 2 s), and the job's task ran on below init; the worker now ends its task's tree."""
    mark, late = marker(), tmp_path / "late"
    tasks = tasks_in_place(tmp_path, task("doomed", f"sleep {mark} & sleep 3; touch {late}"))
    driver = tmp_path / "driver.py"
    driver.write_text(BREAKING_DRIVER)
    with (tmp_path / "stdout").open("w") as out, (tmp_path / "stderr").open("w") as err:
        code = subprocess.run([sys.executable, str(driver), "run", str(tasks), "--json"], cwd=tmp_path,
                              env=clean_env({"NOVA_STATE_DIR": str(tmp_path / "state")}),
                              stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=60).returncode
    exited, stderr = time.monotonic(), (tmp_path / "stderr").read_text()
    assert code == 1, stderr
    assert "planted: the supervisor breaks" in stderr and "internal error" in stderr, stderr
    assert_gone(mark, timeout=1 + 3)  # kill_grace + a few seconds
    time.sleep(max(0.0, exited + 3.5 - time.monotonic()))  # the task would have touched it by now
    assert not late.exists(), "the task ran on after its supervisor had exited"


# ---------------------------------------------------------------- where a run's workers come from


def test_a_runs_workers_are_forked_at_its_start_and_hold_nothing_of_the_supervisor(tmp_path, background):
    """The run's workers are the supervisor's own children, forked before its journal, locks
    and threads existed (no forkserver to lose: 4a3af03 was its loss); each holds its pipe and
    its task's log, not the journal, a lock or another pipe of the supervisor's."""
    ready = [tmp_path / f"ready-{i}" for i in range(2)]
    gate = tmp_path / "gate"
    tasks = tasks_in_place(tmp_path, *(task(f"t{i}", f"touch {r}; while [ ! -e {gate} ]; do sleep 0.05; done")
                                       for i, r in enumerate(ready)), max_parallel=2)
    run = background("run", tasks, "--json")
    try:
        for r in ready:
            wait_for_file(r)
        children = psutil.Process(run.pid).children()
        assert not [p for p in children if "multiprocessing.forkserver" in " ".join(p.cmdline())]
        workers = [p for p in children if p.children()]  # those running a task
        assert len(workers) == 2, [p.cmdline() for p in children]
        supervisors = {link for link in open_files(run.pid).values() if link.startswith(("pipe:", "/"))}
        for worker in workers:
            held = open_files(worker.pid)
            stdio = {held.pop(fd) for fd in (0, 1, 2)}
            assert all("/logs/" in link for link in held.values() if link.startswith("/")), held
            assert not (supervisors - stdio) & set(held.values()), held  # no journal, lock or pipe
    finally:
        gate.touch()
    ran = run.finish(timeout=30)
    assert ran.code == 0, ran
    assert ran.states() == {"t0": "done", "t1": "done"}


# ---------------------------------------------------------------- SIGHUP (1340f1e)


def test_sighup_cancels_the_run_like_sigterm(tmp_path, box: Sandbox, background):
    """1340f1e: SIGHUP (a closed terminal) killed the supervisor outright: no summary, and the
    run was listed as crashed."""
    mark, ready = marker(), tmp_path / "ready"
    tasks = tasks_in_place(tmp_path, task("napping", f"touch {ready}; exec sleep {mark}"))
    run = background("run", tasks, "--json")
    wait_for_file(ready)
    os.kill(run.pid, signal.SIGHUP)
    ran = run.finish(timeout=30)
    assert ran.code == 129, ran
    assert ran.states() == {"napping": "cancelled"}  # the summary was printed
    status = box.status(ran.run_id)
    assert (status["status"], status["exit_code"]) == ("cancelled", 129), status
    assert_gone(mark, timeout=5)


# ---------------------------------------------------------------- the escalation (30428cb)


def test_a_task_that_ignores_sigterm_is_killed_and_the_run_says_so(tmp_path, box: Sandbox):
    """30428cb: the SIGKILL that followed an ignored SIGTERM went unreported."""
    mark = marker()
    tasks = tasks_in_place(tmp_path, task("deaf", f"trap '' TERM; sleep {mark}", timeout="1s"))
    ran = box.run(tasks, timeout=30)
    assert ran.code == 1, ran
    assert ran.states() == {"deaf": "failed"}
    assert "timed out" in ran.summary["tasks"]["deaf"]["error"]
    assert "did not end within 1s of SIGTERM: sent SIGKILL" in ran.text, ran
    assert_gone(mark, timeout=5)


# ---------------------------------------------------------------- escape sequences (151c9f4)

ESCAPES = "\x1b]0;pwned\x07 red \x1b[31mALERT\x1b[0m"


def assert_no_escapes(what: str, text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text, f"{what} prints escapes: {text!r}"


def test_escape_sequences_of_a_tasks_file_never_reach_the_output(tmp_path, box: Sandbox):
    """151c9f4: a description's OSC (window title) and colour sequences went out as they were in
    plan, the plain view, the summary and status."""
    tasks = tasks_in_place(tmp_path, task("shady", "true", description=ESCAPES))
    assert b"\\u001b]0;pwned\\u0007" in tasks.read_bytes()  # TOML escapes: the file itself is clean
    plan = box.cli("plan", tasks)
    assert plan.code == 0, plan
    assert_no_escapes("plan", plan.text)
    assert "red ALERT" in plan.out  # the description is shown, without its escapes
    ran = box.cli("run", tasks)  # the plain view: stdout is a pipe, not a terminal
    assert ran.code == 0, ran
    assert_no_escapes("run", ran.text)
    listing = box.cli("status")
    assert listing.code == 0 and ran.run_id in listing.out, listing
    assert_no_escapes("status", listing.text)
    detail = box.cli("status", ran.run_id)
    assert detail.code == 0, detail
    assert_no_escapes("status RUN", detail.text)


# ---------------------------------------------------------------- the state dir (1e31be0)


def test_the_state_dir_and_its_files_are_the_users_alone(tmp_path):
    """1e31be0: .nova, its runs and logs folders were made 0755 and the journal's files 0644."""
    tasks = tasks_in_place(tmp_path, task("hello", "echo hello"))
    proc = run_cli("run", tasks, "--json", cwd=tmp_path)  # no NOVA_STATE_DIR: .nova beside the file
    assert proc.returncode == 0, proc.stderr
    state = tmp_path / ".nova"
    (run,) = (state / "runs").iterdir()
    folders = {p: mode(p) for p in (state, state / "runs", run, run / "logs")}
    assert folders == dict.fromkeys(folders, 0o700), {str(p): oct(m) for p, m in folders.items()}
    files = {p: mode(p) for p in (run / "run.json", run / "events.jsonl", run / "logs" / "hello.log")}
    assert files == dict.fromkeys(files, 0o600), {str(p): oct(m) for p, m in files.items()}


def test_a_state_dir_others_may_write_is_refused(tmp_path):
    """1e31be0: a world-writable state dir was used as it was, journals and task output open to all."""
    ran_file, state = tmp_path / "ran", tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    tasks = tasks_in_place(tmp_path, task("hello", f"touch {ran_file}"))
    proc = run_cli("run", tasks, cwd=tmp_path, env={"NOVA_STATE_DIR": str(state)})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("novaproc: error:") and str(state) in proc.stderr, proc.stderr
    assert not ran_file.exists()


def test_a_runs_symlink_planted_in_the_state_dir_is_refused(tmp_path):
    """1e31be0: a `runs` link in the state dir made run write there and status list what it held."""
    other, state = tmp_path / "other", tmp_path / "state"
    elsewhere = tasks_in_place(other, task("planted", "true"))
    first = run_cli("run", elsewhere, "--json", cwd=other, env={"NOVA_STATE_DIR": str(other / "state")})
    assert first.returncode == 0, first.stderr
    (planted,) = (other / "state" / "runs").iterdir()
    state.mkdir(mode=0o700)
    (state / "runs").symlink_to(other / "state" / "runs")
    env = {"NOVA_STATE_DIR": str(state)}
    ran_file = tmp_path / "ran"
    tasks = tasks_in_place(tmp_path, task("hello", f"touch {ran_file}"))
    refused = run_cli("run", tasks, cwd=tmp_path, env=env)
    assert refused.returncode == 2, refused.stderr
    assert not ran_file.exists()
    assert [p.name for p in (other / "state" / "runs").iterdir()] == [planted.name]
    for args in (("status",), ("status", "--json")):
        listing = run_cli(*args, cwd=tmp_path, env=env)
        assert planted.name not in listing.stdout + listing.stderr, listing
        assert str(state / "runs") in listing.stderr, listing  # it says why it lists nothing
        assert listing.returncode == 2, listing  # as `run`: a setting to fix

