"""status/ps, logs, wait and cancel through the real command line, on journals written through
the Journal API, some by a small real process that plays the supervisor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import support
from support.cli import run_cli, spawn_cli
from support.events import event
from support.tasks import write_tasks

from novaproc.messages import RunState, TaskState
from novaproc.state.format import RunMeta, TaskMeta, process_start_time
from novaproc.state.journal import Journal
from novaproc.state.reader import list_runs, load_run

TESTS = Path(support.__file__).resolve().parent.parent  # where `support` is imported from

# A stand-in supervisor: journals a run with tasks "work" and "later", prints the run id, writes
# output to work's log, and ends as a real one does: finished after `lines` lines with `code`,
# or cancelled on SIGTERM (unless told to ignore it).
SUPERVISOR = """
import os, signal, sys, time
from pathlib import Path
from novaproc.state.journal import Journal
from novaproc.state.format import RunMeta, TaskMeta
from novaproc.messages import Event, TaskState

sys.path.insert(0, sys.argv[5])
from support.events import event

state, lines, code, on_term = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
tasks = (TaskMeta("work", "do the work", "h1"), TaskMeta("later", "", "h2"))
j = Journal.create(state, RunMeta(tasks_file=str(state.parent / "tasks.toml"), root=str(state.parent),
                                  tasks=tasks, description="stand-in run"))
begun = time.time()

def emit(kind, task=None, st=None, **data):
    j.record(event(j.run_id, time.time(), kind, task, st, **data))

def finish(state, code):
    emit("task_state", "work", state, attempt=1, exit_code=None if code == 143 else code, duration=0.1)
    emit("task_state", "later", TaskState.SKIPPED if code else TaskState.DONE, reason="work ended")
    emit("run_finished", exit_code=code, wall=time.time() - begun, speedup=1.0, estimated_speedup=1.5)
    j.close()
    os._exit(code)

signal.signal(signal.SIGTERM, signal.SIG_IGN if on_term == "ignore" else
              lambda *_: finish(TaskState.CANCELLED, 143))
emit("run_started", pid=os.getpid(), strategy="simple_parallel", estimated_speedup=1.5, tasks=2)
emit("task_state", "work", TaskState.RUNNING, attempt=1, pid=os.getpid())
print(j.run_id, flush=True)
with j.log_path("work").open("ab", buffering=0) as log:
    for n in range(lines):
        log.write(f"line {n}\\n".encode())
        time.sleep(0.05)
finish(TaskState.DONE if code == 0 else TaskState.FAILED, code)
"""


def novaproc(*args: str, state: Path | None = None, cwd: Path | None = None,
             timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """The CLI (without NOVA_* settings, which would change where runs are looked for), told the
    state dir when `state` is given."""
    extra = ["--state-dir", str(state)] if state is not None else []
    return run_cli(*args, *extra, cwd=cwd, timeout=timeout)


class StandIn:
    """A running stand-in supervisor process and the id of its run."""

    def __init__(self, state: Path, lines: int = 10_000, code: int = 0, on_term: str = "cancel") -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR, str(state), str(lines), str(code),
                                      on_term, str(TESTS)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.run_id = self.proc.stdout.readline().strip()
        assert self.run_id, "the stand-in supervisor did not start"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def stand_ins(tmp_path: Path):  # type: ignore[no-untyped-def]
    started: list[StandIn] = []

    def start(**kw: object) -> StandIn:
        started.append(StandIn(tmp_path / "state", **kw))  # type: ignore[arg-type]
        return started[-1]

    yield start
    for s in started:
        s.stop()


def journal_run(state: Path, tmp_path: Path, *, pid: int, pid_start: int | None = None,
                created: float, finished: int | None, description: str = "") -> str:
    """A run written through the Journal API: build done, test failed twice, finished or not."""
    tasks = (TaskMeta("build", "build it", "hb"), TaskMeta("test", "", "ht"))
    m = RunMeta(tasks_file=str(tmp_path / "tasks.toml"), root=str(tmp_path), tasks=tasks, pid=pid,
                pid_start=pid_start, created=created, description=description)
    with Journal.create(state, m) as j:
        def emit(kind: str, task: str | None = None, st: TaskState | None = None, **data: object) -> None:
            j.record(event(j.run_id, created + 1, kind, task, st, **data))
        emit("run_started", estimated_speedup=1.8, tasks=2)
        emit("task_state", "build", TaskState.RUNNING, attempt=1)
        emit("task_state", "build", TaskState.DONE, attempt=1, exit_code=0, duration=2.5)
        for attempt in (1, 2):
            emit("task_state", "test", TaskState.RUNNING, attempt=attempt)
            if finished is not None:
                emit("task_state", "test", TaskState.FAILED, attempt=attempt, exit_code=4, duration=1.0)
        if finished is not None:
            emit("run_finished", exit_code=finished, wall=4.0, speedup=1.2, estimated_speedup=1.8)
        j.log_path("build").write_text("compiling\nbuilt\n")
        j.log_path("test").write_text("1 failed\n")
    return j.run_id


def gone() -> tuple[int, int]:
    proc = subprocess.Popen(["sleep", "30"])
    start = process_start_time(proc.pid)
    proc.kill()
    proc.wait()
    return proc.pid, start or 0


def test_status_lists_runs_newest_first(tmp_path: Path) -> None:
    state = tmp_path / "state"
    old = journal_run(state, tmp_path, pid=gone()[0], created=time.time() - 60, finished=1)
    live = journal_run(state, tmp_path, pid=os.getpid(), created=time.time() - 5, finished=None,
                       description="nightly")
    out = novaproc("status", state=state)
    assert out.returncode == 0, out.stderr
    header, first, second = out.stdout.splitlines()
    assert header.split() == ["ID", "Status", "Tasks", "file", "Started", "Duration", "Task"]
    assert first.split()[:2] == [live, "running"] and first.split()[-1] == "test"  # what runs now
    assert second.split()[:4] == [old, "failed", "(exit", "1)"] and "tasks.toml" in second
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() - 60))
    assert " ".join(second.split()[5:7]) in (started, time.strftime("%Y-%m-%d %H:%M"))
    listed = json.loads(novaproc("ps", "--json", state=state).stdout)
    assert [r["id"] for r in listed] == [live, old]
    assert (listed[0]["status"], listed[0]["running"], listed[1]["exit_code"]) == ("running", ["test"], 1)
    assert novaproc("status", state=tmp_path / "none").stdout.startswith("no runs")


def test_status_of_one_run_shows_each_task_and_the_speedups(tmp_path: Path) -> None:
    state = tmp_path / "state"
    run_id = journal_run(state, tmp_path, pid=gone()[0], created=time.time(), finished=1)
    out = novaproc("status", run_id[:4], state=state)
    assert out.returncode == 0, out.stderr
    assert f"run {run_id}: failed (exit 1)" in out.stdout
    assert "estimated 1.8x, real 1.2x" in out.stdout
    rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[7:]}
    assert rows["build"][1:5] == ["done", "1", "2.5s", "0"]
    assert rows["test"][1:5] == ["failed", "2", "1.0s", "4"]
    detail = json.loads(novaproc("status", run_id, "--json", state=state).stdout)
    assert (detail["id"], detail["status"], detail["exit_code"]) == (run_id, "failed", 1)
    assert [(t["id"], t["state"], t["attempts"]) for t in detail["tasks"]] == [
        ("build", "done", 1), ("test", "failed", 2)]


def test_a_crashed_run_and_an_unknown_id(tmp_path: Path) -> None:
    state = tmp_path / "state"
    pid, start = gone()
    run_id = journal_run(state, tmp_path, pid=pid, pid_start=start, created=time.time(), finished=None)
    out = novaproc("status", run_id, state=state)
    assert f"run {run_id}: crashed" in out.stdout and f"novaproc resume {run_id}" in out.stdout
    interrupted = next(line.split() for line in out.stdout.splitlines() if "(interrupted)" in line)
    assert interrupted[2:5] == ["(interrupted)", "2", "-"]  # it ended when, nobody knows
    wrong = run_id[:5] + ("0" if run_id[5] != "0" else "1")
    for command in ("status", "logs", "wait", "cancel"):
        out = novaproc(command, wrong, state=state)
        assert out.returncode == 2 and f'did you mean "{run_id}"' in out.stderr, (command, out.stderr)
        assert len(out.stderr.splitlines()) == 1


def test_logs_of_one_task_and_of_all(tmp_path: Path) -> None:
    state = tmp_path / "state"
    run_id = journal_run(state, tmp_path, pid=gone()[0], created=time.time(), finished=1)
    assert novaproc("logs", run_id, "build", state=state).stdout == "compiling\nbuilt\n"
    assert novaproc("logs", run_id, state=state).stdout == (
        "==> build <==\ncompiling\nbuilt\n\n==> test <==\n1 failed\n")
    out = novaproc("logs", run_id, "biuld", state=state)
    assert out.returncode == 2 and 'did you mean "build"' in out.stderr


def test_logs_follow_until_the_run_ends(tmp_path: Path, stand_ins) -> None:  # type: ignore[no-untyped-def]
    run = stand_ins(lines=12, code=0)
    out = novaproc("logs", "--follow", run.run_id, "work", state=tmp_path / "state")
    assert out.returncode == 0
    assert out.stdout == "".join(f"line {n}\n" for n in range(12))  # nothing lost at the end
    assert run.proc.wait(timeout=5) == 0


def test_wait_exits_with_the_run_exit_code(tmp_path: Path, stand_ins) -> None:  # type: ignore[no-untyped-def]
    run = stand_ins(lines=6, code=1)
    assert load_run(tmp_path / "state", run.run_id).status is RunState.RUNNING
    out = novaproc("wait", run.run_id, state=tmp_path / "state")
    assert (out.returncode, out.stderr) == (1, "")
    assert load_run(tmp_path / "state", run.run_id).status is RunState.FAILED
    done = journal_run(tmp_path / "state", tmp_path, pid=gone()[0], created=time.time(), finished=0)
    assert novaproc("wait", done, state=tmp_path / "state").returncode == 0


def test_wait_on_a_crashed_run_says_how_to_resume(tmp_path: Path, stand_ins) -> None:  # type: ignore[no-untyped-def]
    run = stand_ins()
    os.kill(run.proc.pid, signal.SIGKILL)
    run.proc.wait()
    out = novaproc("wait", run.run_id, state=tmp_path / "state")
    assert out.returncode == 1 and f"novaproc resume {run.run_id}" in out.stderr


def test_cancel_stops_a_live_supervisor(tmp_path: Path, stand_ins) -> None:  # type: ignore[no-untyped-def]
    run = stand_ins()
    out = novaproc("cancel", run.run_id, state=tmp_path / "state")
    assert out.returncode == 0, out.stderr
    assert f"cancelled run {run.run_id}" in out.stdout
    assert run.proc.wait(timeout=5) == 143
    record = load_run(tmp_path / "state", run.run_id)
    assert (record.status, record.exit_code) == (RunState.CANCELLED, 143)
    assert record.task("work").state is TaskState.CANCELLED
    again = novaproc("cancel", run.run_id, state=tmp_path / "state")
    assert again.returncode == 0 and "already finished: cancelled" in again.stdout


def test_cancel_gives_up_after_its_timeout(tmp_path: Path, stand_ins) -> None:  # type: ignore[no-untyped-def]
    run = stand_ins(on_term="ignore")
    out = novaproc("cancel", run.run_id, "--timeout", "0.5", state=tmp_path / "state")
    assert out.returncode == 1 and "did not stop within 0.5s" in out.stderr
    assert run.proc.poll() is None


def test_cancel_never_signals_a_process_that_reused_the_pid(tmp_path: Path) -> None:
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        start = process_start_time(bystander.pid)
        assert start is not None
        state = tmp_path / "state"
        run_id = journal_run(state, tmp_path, pid=bystander.pid, pid_start=start - 1, created=time.time(),
                             finished=None)
        out = novaproc("cancel", run_id, state=state)
        assert out.returncode == 0 and "crashed" in out.stderr
        time.sleep(0.1)
        assert bystander.poll() is None  # still alive: it was never the run's supervisor
    finally:
        bystander.kill()
        bystander.wait()


def test_the_state_dir_defaults_to_nova_at_the_git_root(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()  # enough for the root to be found
    (tmp_path / "sub").mkdir()
    run_id = journal_run(tmp_path / ".nova", tmp_path, pid=gone()[0], created=time.time(), finished=0)
    out = novaproc("status", cwd=tmp_path / "sub")
    assert out.returncode == 0 and run_id in out.stdout, out.stderr


def test_a_real_run_is_seen_by_status_logs_and_wait(tmp_path: Path) -> None:
    write_tasks(tmp_path, '[tasks.hello]\ncmd = "echo hello"\n'
                          '[tasks.broken]\ncmd = "echo oops; exit 3"\n')
    state = tmp_path / "state"
    ran = run_cli("run", "--quiet", "tasks.toml", cwd=tmp_path, env={"NOVA_STATE_DIR": str(state)},
                  timeout=60)
    assert ran.returncode == 1, ran.stderr
    [run_dir] = (state / "runs").iterdir()
    detail = json.loads(novaproc("status", run_dir.name, "--json", state=state).stdout)
    assert (detail["status"], detail["exit_code"]) == ("failed", 1)
    assert {t["id"]: t["state"] for t in detail["tasks"]} == {"hello": "done", "broken": "failed"}
    assert novaproc("logs", run_dir.name, "broken", state=state).stdout == "oops\n"
    assert novaproc("wait", run_dir.name, state=state).returncode == 1


def start_real_run(tmp_path: Path, state: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`novaproc run` of a task that sleeps, once its task runs."""
    write_tasks(tmp_path, '[tasks.slow]\ncmd = "echo start; sleep 30"\n'
                          '[tasks.after]\ncmd = "true"\ndepends_on = ["slow"]\n', "long.toml")
    proc = spawn_cli("run", "--quiet", "long.toml", cwd=tmp_path, env={"NOVA_STATE_DIR": str(state)},
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=False)
    deadline = time.monotonic() + 20
    while True:
        assert time.monotonic() < deadline and proc.poll() is None, "the run did not start its task"
        runs = list_runs(state)  # a run's folder exists a moment before its record does
        if runs and runs[0].task("slow").state is TaskState.RUNNING and runs[0].task("slow").pid:
            return proc, runs[0].id  # a task that runs a while has its pid in the journal
        time.sleep(0.05)


def test_cancel_and_kill_of_a_real_run(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc, run_id = start_real_run(tmp_path, state)
    try:
        assert process_start_time(load_run(state, run_id).task("slow").pid or 0) is not None
        out = novaproc("cancel", run_id, state=state)
        assert out.returncode == 0 and f"cancelled run {run_id}" in out.stdout, out.stderr
        assert proc.wait(timeout=10) == 143
        record = load_run(state, run_id)
        assert record.status is RunState.CANCELLED and record.task("slow").state is TaskState.CANCELLED
        assert process_start_time(record.task("slow").pid or 0) is None  # no task process left
    finally:
        proc.kill()
        proc.wait()
    (tmp_path / "again").mkdir()
    proc, run_id = start_real_run(tmp_path / "again", tmp_path / "state2")
    proc.kill()  # SIGKILL: the supervisor records nothing more
    proc.wait()
    out = novaproc("status", state=tmp_path / "state2")
    assert out.stdout.splitlines()[1].split()[:2] == [run_id, "crashed"]
