"""A task's log as real workers write it: none for a task that printed nothing, its name given
while a longer task runs (to be followed), and nothing of the worker's own left behind, even
when the worker is killed mid-task."""

from __future__ import annotations

import os
from pathlib import Path

from support.pool import DEADLINE, POLL, kill_worker_of, make_job
from support.processes import assert_gone, marker, sleepers
from support.waiting import wait_until

from novaproc.execution.tasklog import rescue, scratch_path


def logs_in(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name.endswith((".log", ".scratch")))


def scratches(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".scratch"))


def test_quiet_tasks_leave_no_file_and_the_worker_none_once_it_ends(tmp_path, pool):
    p, reports = pool(1)
    for i in range(20):
        p.submit(make_job(tmp_path, f"q{i}", shell="true"))
        assert reports.until_finished(f"q{i}").ok
    assert logs_in(tmp_path) == scratches(tmp_path)  # no log: one empty file of the worker's, reused
    assert len(scratches(tmp_path)) == 1 and not (tmp_path / scratches(tmp_path)[0]).stat().st_size
    p.submit(make_job(tmp_path, "loud", shell="echo hello"))
    assert reports.until_finished("loud").ok
    p.submit(make_job(tmp_path, "quiet", shell="true"))
    assert reports.until_finished("quiet").ok
    assert logs_in(tmp_path) == sorted(["loud.log", *scratches(tmp_path)])
    p.shutdown()
    assert logs_in(tmp_path) == ["loud.log"]
    assert (tmp_path / "loud.log").read_text() == "hello\n"


def test_output_after_a_quiet_task_is_the_next_tasks_alone(tmp_path, pool):
    """The scratch file a quiet task used serves the next one: nothing of one leaks to another."""
    p, reports = pool(1)
    for tid, shell in (("a", "echo one"), ("b", "true"), ("c", "echo three; echo err >&2")):
        p.submit(make_job(tmp_path, tid, shell=shell))
        assert reports.until_finished(tid).ok
    assert (tmp_path / "a.log").read_text() == "one\n"
    assert not (tmp_path / "b.log").exists()
    assert (tmp_path / "c.log").read_text() == "three\nerr\n"


def test_a_running_task_has_its_log_to_follow_and_a_quiet_one_none_at_its_end(tmp_path, pool):
    gate, log = tmp_path / "gate", tmp_path / "talks.log"
    until_gate = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    p, reports = pool(2)
    p.submit(make_job(tmp_path, "talks", shell=f"echo early; {until_gate}; echo late"))
    p.submit(make_job(tmp_path, "quiet", shell=until_gate))
    reports.until_started("talks")
    reports.until_started("quiet")
    wait_until(lambda: log.exists() and log.read_text() == "early\n",
               what="the running task's log", timeout=DEADLINE, every=POLL)
    gate.touch()
    assert reports.until_finished("talks").ok and reports.until_finished("quiet").ok
    assert (tmp_path / "talks.log").read_text() == "early\nlate\n"
    assert not (tmp_path / "quiet.log").exists()


def test_a_killed_workers_task_keeps_what_it_printed_and_no_scratch_is_left(tmp_path, pool):
    mark = marker()
    p, reports = pool(1)
    p.submit(make_job(tmp_path, "victim", shell=f"echo before; sleep {mark}"))
    wait_until(lambda: sleepers(mark), what="the victim's sleep", timeout=DEADLINE, every=POLL)
    kill_worker_of(reports, "victim")
    assert not reports.until_finished("victim").ok
    assert (tmp_path / "victim.log").read_text() == "before\n"
    assert not scratches(tmp_path)
    assert_gone(mark)


def test_rescue_moves_a_dead_workers_scratch_output_to_the_tasks_log(tmp_path):
    """What a task printed before its worker died, before it ran long enough to be named."""
    (tmp_path / "t.log").write_text("attempt 1\n")
    Path(scratch_path(str(tmp_path), 4321)).write_text("attempt 2\n")
    Path(scratch_path(str(tmp_path), 4322)).write_text("")
    rescue(str(tmp_path / "t.log"), 4321)
    rescue(str(tmp_path / "u.log"), 4322)
    rescue(str(tmp_path / "v.log"), 4323)  # no scratch file at all
    assert (tmp_path / "t.log").read_text() == "attempt 1\nattempt 2\n"
    assert sorted(os.listdir(tmp_path)) == ["t.log"]


def test_a_worker_keeps_one_scratch_file_however_many_folders_its_jobs_use(tmp_path, pool):
    """A worker on a cluster gets a new folder for each job: one scratch file (and descriptor)
    at a time, not one a folder for ever."""
    p, reports = pool(1)
    folders = [tmp_path / f"job{i}" for i in range(5)]
    for i, folder in enumerate(folders):
        folder.mkdir()
        p.submit(make_job(folder, f"q{i}", shell="echo $PPID > ../worker.pid"))
        assert reports.until_finished(f"q{i}").ok
        p.submit(make_job(folder, f"quiet{i}", shell="true"))
        assert reports.until_finished(f"quiet{i}").ok
    worker = int((tmp_path / "worker.pid").read_text())
    held = [os.readlink(f"/proc/{worker}/fd/{fd}") for fd in os.listdir(f"/proc/{worker}/fd")]
    assert len([link for link in held if link.endswith(".scratch")]) == 1, held
    assert [len(scratches(folder)) for folder in folders] == [0, 0, 0, 0, 1]
