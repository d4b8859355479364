"""The run journal on real files and real processes: layout, replay, crashes, torn lines, resume."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.events import event

from novaproc.errors import EnvironmentFault, InternalError, UsageError
from novaproc.fsio import write_atomic
from novaproc.messages import RunState, TaskState
from novaproc.state.format import (
    EVENTS_FILE,
    RUN_FILE,
    JournalCorrupt,
    RunMeta,
    TaskMeta,
    process_start_time,
)
from novaproc.state.journal import Journal
from novaproc.state.reader import RunRecord, kept_results, list_runs, load_run

TASKS = (TaskMeta("build", "build it", "h-build"), TaskMeta("test", "", "h-test"),
         TaskMeta("docs", "", "h-docs"))


def meta(tmp_path: Path, **changes: object) -> RunMeta:
    fields: dict[str, object] = {"tasks_file": str(tmp_path / "tasks.toml"), "root": str(tmp_path),
                                 "tasks": TASKS, "description": "a test run"}
    fields.update(changes)
    return RunMeta(**fields)  # type: ignore[arg-type]


def emit(j: Journal, kind: str, task: str | None = None, state: TaskState | None = None,
         at: float = 1000.0, **data: object) -> None:
    j.record(event(j.run_id, at, kind, task, state, **data))


@pytest.fixture
def dead_pid() -> tuple[int, int]:
    """The pid and start time of a real process that has exited and been reaped."""
    proc = subprocess.Popen(["sleep", "30"])
    start = process_start_time(proc.pid)
    assert start is not None
    proc.kill()
    proc.wait()
    return proc.pid, start


def finished_run(tmp_path: Path, state: Path, dead: tuple[int, int], *, hashes: dict[str, str] | None = None,
                 tasks_file: str | None = None, created: float = 900.0) -> str:
    """A whole run, as a supervisor (since gone) would have recorded it: build done, test failed."""
    tasks = tuple(TaskMeta(t.id, t.description, (hashes or {}).get(t.id, t.hash)) for t in TASKS)
    m = meta(tmp_path, pid=dead[0], pid_start=dead[1], tasks=tasks, created=created,
             **({"tasks_file": tasks_file} if tasks_file else {}))
    with Journal.create(state, m) as j:
        emit(j, "run_started", at=1000, estimated_speedup=1.6, strategy="dag",
             tasks=[{"id": t.id, "description": t.description, "hash": t.hash, "kind": "normal"}
                    for t in tasks])
        emit(j, "task_state", "build", TaskState.RUNNING, at=1000, attempt=1, pid=11)
        emit(j, "task_state", "build", TaskState.RUNNING, at=1000.5, attempt=1, pid=11)  # same attempt
        emit(j, "task_state", "build", TaskState.DONE, at=1003, attempt=1, exit_code=0, duration=3.0)
        emit(j, "task_state", "test", TaskState.WAITING, at=1003, reason="lock on src/ held by build")
        emit(j, "task_state", "test", TaskState.RUNNING, at=1003, attempt=1, pid=12)
        emit(j, "task_state", "test", TaskState.FAILED, at=1004, attempt=1, exit_code=2, duration=1.0)
        emit(j, "task_state", "test", TaskState.RUNNING, at=1004, attempt=2, pid=13)
        emit(j, "task_state", "test", TaskState.FAILED, at=1005.5, attempt=2, signal=9)
        emit(j, "task_state", "docs", TaskState.SKIPPED, at=1005, reason="test failed")
        emit(j, "run_finished", at=1006, exit_code=1, state="failed", wall=6.0, task_time=5.5,
             speedup=0.9, estimated_speedup=1.6)
    return j.run_id


def test_create_lays_out_the_run_folder(tmp_path: Path) -> None:
    state = tmp_path / "deep" / ".nova"
    j1, j2 = Journal.create(state, meta(tmp_path)), Journal.create(state, meta(tmp_path))
    j1.close()
    j2.close()
    assert (state / ".gitignore").read_text() == "*\n"
    assert j1.run_id != j2.run_id
    assert len(j1.run_id) == 6 and int(j1.run_id, 16) >= 0
    assert j1.folder == state / "runs" / j1.run_id and (j1.folder / "logs").is_dir()
    record = json.loads((j1.folder / RUN_FILE).read_text())
    assert record["id"] == j1.run_id and record["pid"] == os.getpid()
    assert record["pid_start"] == process_start_time(os.getpid())
    header = json.loads((j1.folder / EVENTS_FILE).read_text().splitlines()[0])
    assert header["novaproc_journal"] == 1 and header["run_id"] == j1.run_id
    assert load_run(state, j1.run_id).status is RunState.RUNNING  # this process supervises it


def test_a_taken_id_is_retried_and_a_full_state_dir_is_an_error(tmp_path: Path) -> None:
    ids = iter(["abc123", "abc123", "def456"])
    with Journal.create(tmp_path, meta(tmp_path), new_id=lambda: next(ids)) as first:
        pass
    with Journal.create(tmp_path, meta(tmp_path), new_id=lambda: next(ids)) as second:
        pass
    assert (first.run_id, second.run_id) == ("abc123", "def456")
    with pytest.raises(EnvironmentFault, match="no free run id"):
        Journal.create(tmp_path, meta(tmp_path), new_id=lambda: "abc123")


def test_replay_gives_each_task_its_state_attempts_duration_and_exit_code(
        tmp_path: Path, dead_pid: tuple[int, int]) -> None:
    run_id = finished_run(tmp_path, tmp_path, dead_pid)
    r = load_run(tmp_path, run_id)
    assert (r.status, r.exit_code, r.wall, r.speedup, r.estimated_speedup) == (
        RunState.FAILED, 1, 6.0, 0.9, 1.6)
    assert r.strategy == "dag" and r.started == 1000 and r.ended == 1006 and r.warnings == ()
    build, test, docs = (r.task(t) for t in ("build", "test", "docs"))
    assert (build.state, build.attempts, build.duration, build.exit_code) == (TaskState.DONE, 1, 3.0, 0)
    assert build.description == "build it" and build.done_hash == "h-build"
    assert (test.state, test.attempts, test.exit_code, test.signal) == (TaskState.FAILED, 2, None, 9)
    assert test.duration == pytest.approx(1.5)  # from its start and end when no duration is given
    assert (docs.state, docs.reason, docs.attempts) == (TaskState.SKIPPED, "test failed", 0)
    with pytest.raises(UsageError, match='did you mean "test"'):
        r.task("tset")


def test_a_live_supervisor_is_running_and_a_gone_one_crashed(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        with Journal.create(tmp_path, meta(tmp_path, pid=proc.pid)) as j:
            emit(j, "task_state", "build", TaskState.RUNNING, attempt=1)
        assert load_run(tmp_path, j.run_id).status is RunState.RUNNING
        proc.kill()
        time.sleep(0.05)  # not reaped yet: a zombie never writes again either
        assert load_run(tmp_path, j.run_id).status is RunState.CRASHED
    finally:
        proc.kill()
        proc.wait()
    record = load_run(tmp_path, j.run_id)
    assert record.status is RunState.CRASHED and record.exit_code is None
    assert record.task("build").state is TaskState.RUNNING  # as last recorded


def test_a_reused_pid_does_not_make_a_dead_run_look_alive(tmp_path: Path) -> None:
    mine = process_start_time(os.getpid())
    assert mine is not None
    with Journal.create(tmp_path, meta(tmp_path, pid=os.getpid(), pid_start=mine - 1)) as j:
        pass
    assert load_run(tmp_path, j.run_id).status is RunState.CRASHED


def test_process_start_time_reads_proc(dead_pid: tuple[int, int]) -> None:
    assert process_start_time(os.getpid()) == process_start_time(os.getpid())
    parent = process_start_time(os.getppid())
    assert parent is not None and parent <= process_start_time(os.getpid())  # type: ignore[operator]
    assert process_start_time(dead_pid[0]) != dead_pid[1]  # gone (None), or a new process since
    assert process_start_time(-1) is None and process_start_time(0) is None


def test_every_cut_of_the_last_line_loads_with_a_warning(tmp_path: Path, dead_pid: tuple[int, int]) -> None:
    run_id = finished_run(tmp_path, tmp_path, dead_pid)
    path = tmp_path / "runs" / run_id / EVENTS_FILE
    whole = path.read_bytes()
    last = whole.rstrip(b"\n").rsplit(b"\n", 1)[1] + b"\n"
    body = whole[: -len(last)]
    for cut in range(len(last) + 1):
        path.write_bytes(body + last[:cut])
        r = load_run(tmp_path, run_id)
        complete = cut >= len(last) - 1  # the JSON is whole, with or without its newline
        torn = 0 < cut < len(last) - 1
        assert r.status is (RunState.FAILED if complete else RunState.CRASHED), cut
        assert r.task("test").attempts == 2 and r.task("docs").state is TaskState.SKIPPED
        assert len(r.warnings) == torn, cut
        if torn:
            assert f"({cut} bytes)" in r.warnings[0] and str(path) in r.warnings[0]


@pytest.mark.parametrize("damage", [b"garbage\n", b"[1, 2]\n", b'{"no": "event"}\n',
                                    b'{"event": "task_state", "run_id": "x", "time": 1, "task": "build", '
                                    b'"state": "exploded"}\n', b'{"event": "task_st\n'])
def test_damage_before_the_last_line_is_a_clear_error(
        tmp_path: Path, dead_pid: tuple[int, int], damage: bytes) -> None:
    run_id = finished_run(tmp_path, tmp_path, dead_pid)
    path = tmp_path / "runs" / run_id / EVENTS_FILE
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([*lines[:3], damage, *lines[3:]]))
    with pytest.raises(JournalCorrupt, match=rf"{path}: line 4: "):
        load_run(tmp_path, run_id)
    problems: list[str] = []
    assert list_runs(tmp_path, problems) == [] and "line 4" in problems[0]


def test_a_journal_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    with Journal.create(tmp_path, meta(tmp_path)) as j:
        pass
    path = j.folder / EVENTS_FILE
    path.write_text('{"novaproc_journal": 99}\n')
    with pytest.raises(EnvironmentFault, match="newer novaproc"):
        load_run(tmp_path, j.run_id)


READER = """
import json, sys, time
path, seen, bad = sys.argv[1], set(), 0
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        seen.add(json.loads(open(path).read())["n"])
    except ValueError:
        bad += 1
print(bad, len(seen))
"""


def test_the_run_record_is_never_seen_half_written(tmp_path: Path) -> None:
    target = tmp_path / RUN_FILE
    versions = [json.dumps({"n": n, "pad": "x" * (n * 5000)}) for n in range(40)]
    write_atomic(target, versions[0])
    with target.open() as before:
        write_atomic(target, versions[1])
        assert before.read() == versions[0]  # replaced, not rewritten in place
    reader = subprocess.Popen([sys.executable, "-c", READER, str(target), "0.8"], stdout=subprocess.PIPE,
                              text=True)
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:
        for text in versions:
            write_atomic(target, text)
    bad, seen = map(int, reader.communicate(timeout=10)[0].split())
    assert (bad, seen > 1) == (0, True)  # a partial file would not parse
    assert sorted(p.name for p in tmp_path.iterdir()) == [RUN_FILE]  # no temp file left behind
    with pytest.raises(UnicodeEncodeError):
        write_atomic(target, "\udcff")  # fails while writing the temp file
    assert json.loads(target.read_text())["n"] == 39
    assert sorted(p.name for p in tmp_path.iterdir()) == [RUN_FILE]


def test_a_leftover_temp_file_of_a_crash_is_ignored(tmp_path: Path, dead_pid: tuple[int, int]) -> None:
    run_id = finished_run(tmp_path, tmp_path, dead_pid)
    (tmp_path / "runs" / run_id / f".{RUN_FILE}.0badf00d.tmp").write_text('{"id": "half')
    (tmp_path / "runs" / "f00f00").mkdir()  # a folder whose run.json was never written
    assert [r.id for r in list_runs(tmp_path)] == [run_id]
    assert load_run(tmp_path, run_id).status is RunState.FAILED


def test_environment_values_are_never_recorded(tmp_path: Path) -> None:
    secret = "hunter2-do-not-store"
    task = TaskMeta("deploy", hash="h", env={"API_TOKEN": secret})  # type: ignore[arg-type]
    with Journal.create(tmp_path, meta(tmp_path, tasks=(task,))) as j:
        emit(j, "run_started", tasks=[{"id": "deploy", "env": {"API_TOKEN": secret}}])
        emit(j, "message", level="info", text="ok", nested=[{"env": {"B": secret}}])
    files = [p for p in j.folder.rglob("*") if p.is_file()]
    assert files and not any(secret in p.read_text() for p in files)
    assert "API_TOKEN" in (j.folder / RUN_FILE).read_text()
    assert "API_TOKEN" in (j.folder / EVENTS_FILE).read_text()


def test_task_logs_live_in_the_run_folder(tmp_path: Path) -> None:
    with Journal.create(tmp_path, meta(tmp_path)) as j:
        assert j.log_path("build") == j.folder / "logs" / "build.log"
        with pytest.raises(UsageError):
            j.log_path("../escape")
        with pytest.raises(InternalError):
            j.record(event("other", 1.0, "message"))
    with pytest.raises(InternalError, match="closed"):
        emit(j, "message", level="info", text="late")


def test_reopen_drops_a_torn_tail_and_records_the_new_supervisor(
        tmp_path: Path, dead_pid: tuple[int, int]) -> None:
    run_id = finished_run(tmp_path, tmp_path, dead_pid)
    path = tmp_path / "runs" / run_id / EVENTS_FILE
    path.write_bytes(path.read_bytes()[:-20])  # the supervisor died writing run_finished
    assert load_run(tmp_path, run_id).status is RunState.CRASHED
    changed = (TaskMeta("build", hash="h-build"), TaskMeta("test", hash="h-test2"), TaskMeta("new", hash="n"))
    with reopen(load_run(tmp_path, run_id[:4]), tasks=changed) as j:
        assert load_run(tmp_path, run_id).status is RunState.RUNNING
        emit(j, "task_state", "test", TaskState.RUNNING, at=2000, attempt=1)
        emit(j, "task_state", "test", TaskState.DONE, at=2001, attempt=1, exit_code=0, duration=1.0)
        emit(j, "run_finished", at=2002, exit_code=0, state="done", wall=2.0)
    r = load_run(tmp_path, run_id)
    assert (r.status, r.exit_code, r.warnings, r.pid) == (RunState.DONE, 0, (), os.getpid())
    assert r.meta.pid_start == process_start_time(os.getpid())
    assert (r.task("test").attempts, r.task("test").done_hash) == (3, "h-test2")
    assert r.task("new").state is TaskState.QUEUED and r.task("build").done_hash == "h-build"
    assert "dropped a torn last line" in path.read_text()


def test_reopen_refuses_a_run_that_is_still_going(tmp_path: Path) -> None:
    with Journal.create(tmp_path, meta(tmp_path)) as j:
        running = load_run(tmp_path, j.run_id)
        with pytest.raises(UsageError, match="still running"):
            reopen(running)
        with pytest.raises(UsageError, match="being written by another"):  # whatever run.json says
            Journal.reopen(running.folder, running.meta, RunState.CRASHED)
    Journal.reopen(running.folder, running.meta, RunState.CRASHED).close()  # once the writer let go


def test_kept_results_are_the_successes_with_an_unchanged_definition(
        tmp_path: Path, dead_pid: tuple[int, int]) -> None:
    r = load_run(tmp_path, finished_run(tmp_path, tmp_path, dead_pid))
    same = {"build": "h-build", "test": "h-test", "docs": "h-docs"}
    assert list(kept_results(r, same)) == ["build"]
    assert kept_results(r, same)["build"].duration == 3.0
    assert kept_results(r, same | {"build": "edited"}) == {}
    assert kept_results(r, {}) == {}
    assert list(kept_results(r, same, depends_on={"build": []})) == ["build"]
    assert kept_results(r, same, depends_on={"build": ["gen"]}) == {}  # its input will be rebuilt


def test_a_success_under_an_older_definition_is_not_kept_after_a_resume(
        tmp_path: Path, dead_pid: tuple[int, int]) -> None:
    run_id = finished_run(tmp_path, tmp_path, dead_pid)
    edited = (TaskMeta("build", hash="edited"),)
    resumed = multiprocessing.get_context("fork").Process(
        target=lambda: reopen(load_run(tmp_path, run_id), tasks=edited).close())
    resumed.start()
    resumed.join()
    r = load_run(tmp_path, run_id)  # the resumed supervisor died before build ran again
    assert r.status is RunState.CRASHED and r.task("build").hash == "edited"
    assert kept_results(r, {"build": "edited"}) == {}


def test_runs_are_listed_newest_first_and_found_by_prefix(tmp_path: Path, dead_pid: tuple[int, int]) -> None:
    ids = [finished_run(tmp_path, tmp_path, dead_pid, created=c) for c in (5.0, 7.0, 6.0)]
    assert [r.id for r in list_runs(tmp_path)] == [ids[1], ids[2], ids[0]]
    assert load_run(tmp_path, ids[0][:5]).id == ids[0]
    with pytest.raises(UsageError, match=rf'did you mean "{ids[0]}"'):
        load_run(tmp_path, ids[0][:5] + "z")
    with pytest.raises(UsageError, match="not a run id"):
        load_run(tmp_path, "../../etc")
    with pytest.raises(UsageError, match="no runs recorded"):
        load_run(tmp_path / "empty", "abc123")


def test_a_killed_supervisor_leaves_a_loadable_crashed_run(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from novaproc.state.journal import Journal\n"
        "from novaproc.state.format import RunMeta\n"
        "from novaproc.messages import Event, Level, Message, TaskChanged, TaskState\n"
        "j = Journal.create(Path(sys.argv[1]), RunMeta(tasks_file='t.toml', root='.'))\n"
        "n = 0\n"
        "while True:\n"
        "    n += 1\n"
        "    j.record(Event(j.run_id, time.time(), TaskChanged(TaskState.RUNNING, attempt=n), 't'))\n"
        "    j.record(Event(j.run_id, time.time(), Message(Level.INFO, 'x' * 3000)))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)])
    try:
        deadline = time.monotonic() + 10
        while sum(p.stat().st_size for p in tmp_path.glob("runs/*/events.jsonl")) < 50_000:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    [record] = list_runs(tmp_path)
    assert record.status is RunState.CRASHED and record.task("t").attempts > 5


@pytest.mark.parametrize(("code", "status"), [(0, RunState.DONE), (1, RunState.FAILED), (3, RunState.FAILED),
                                              (143, RunState.CANCELLED), (130, RunState.CANCELLED)])
def test_a_run_end_without_a_state_takes_it_from_the_exit_code(
        tmp_path: Path, code: int, status: RunState) -> None:
    with Journal.create(tmp_path, meta(tmp_path)) as j:
        emit(j, "run_started", tasks=3, pid=os.getpid())  # a count, not a list: no declaration
        emit(j, "run_finished", exit_code=code, wall=1.0)
    r = load_run(tmp_path, j.run_id)
    assert (r.status, r.exit_code) == (status, code)
    assert [t.id for t in r.tasks] == ["build", "test", "docs"]


def reopen(record: RunRecord, tasks: tuple[TaskMeta, ...] | None = None) -> Journal:
    return Journal.reopen(record.folder, record.meta, record.status, tasks=tasks)
