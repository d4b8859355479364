"""The worker pool (novaproc.pool) driven directly: real forkserver workers, real task
processes, real log files. Each test that leaves a process behind on failure uses a unique
marker in its command line and checks that no process with it remains."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from support.pool import DEADLINE, POLL, kill_worker_of, make_job
from support.processes import assert_gone, marker, marker_procs, sleepers
from support.waiting import wait_until

from novaproc.messages import Escalated, Finished, Job


def run_one(pool, job: Job) -> Finished:
    p, reports = pool(1)
    p.submit(job)
    return reports.until_finished(job.task_id)


CALLS = '''
import ctypes
import os


def add(a, b, scale=1):
    return (a + b) * scale


def where():
    import sys
    return {"cwd": os.getcwd(), "path0": sys.path[0], "task": os.environ.get("NOVA_TASK_ID")}


def big(n):
    return "x" * n


def unjsonable():
    return {1, 2}


def boom():
    print("before the failure", flush=True)
    raise ValueError("boom in a call")


def exit3():
    os._exit(3)


def segfault():
    ctypes.string_at(0)


def kill9():
    os.kill(os.getpid(), 9)


def system_exit():
    raise SystemExit(4)
'''


@pytest.fixture
def calls(tmp_path: Path) -> Path:
    (tmp_path / "poolcalls.py").write_text(textwrap.dedent(CALLS))
    return tmp_path


# ---------------------------------------------------------------- commands


def test_shell_command_output_in_order_and_exit_code(tmp_path, pool):
    job = make_job(tmp_path, shell="echo one; echo two >&2; echo three; exit 7")
    p, reports = pool(1)
    p.submit(job)
    finished = reports.until_finished("t")  # a short task may end before it reports Started
    assert finished.exit_code == 7 and finished.signal is None and not finished.ok
    assert finished.error is None
    assert finished.started_at <= finished.ended_at
    assert Path(job.log_path).read_text() == "one\ntwo\nthree\n"


def test_a_later_attempt_is_headed_in_the_same_log(tmp_path, pool):
    p, reports = pool(1)
    p.submit(make_job(tmp_path, shell="echo first"))
    assert reports.until_finished("t").ok
    del reports.finished["t"]
    p.submit(make_job(tmp_path, shell="echo second", attempt=2))
    assert reports.until_finished("t").ok
    first, blank, header, second = (tmp_path / "t.log").read_text().splitlines()
    assert (first, blank, second) == ("first", "", "second")
    assert header.startswith("=== novaproc: attempt 2 of t, ")


def test_success_is_ok(tmp_path, pool):
    finished = run_one(pool, make_job(tmp_path, shell="true"))
    assert finished.ok and finished.exit_code == 0


def test_argv_runs_without_a_shell(tmp_path, pool):
    argv = (sys.executable, "-c", "import sys; print(sys.argv[1:])", "a b", "$HOME", "*", "; echo x")
    job = make_job(tmp_path, argv=argv)
    assert run_one(pool, job).ok
    assert Path(job.log_path).read_text().strip() == "['a b', '$HOME', '*', '; echo x']"


def test_env_and_cwd_reach_the_task(tmp_path, pool):
    sub = tmp_path / "sub"
    sub.mkdir()
    job = make_job(tmp_path, shell='pwd; echo "$FOO|$NOVA_TASK_ID|$NOVA_ATTEMPT"', cwd=str(sub),
                   env={"FOO": "bar baz"}, attempt=3)
    assert run_one(pool, job).ok
    assert Path(job.log_path).read_text().splitlines() == [str(sub), "bar baz|t|3"]


def test_a_program_that_does_not_exist_fails(tmp_path, pool):
    job = make_job(tmp_path, argv=("no-such-program-8f3a",))
    finished = run_one(pool, job)
    assert not finished.ok
    assert finished.exit_code == 127
    assert "program not found" in finished.error and "no-such-program-8f3a" in finished.error
    assert "no-such-program-8f3a" in Path(job.log_path).read_text()


def test_a_shell_command_that_does_not_exist_fails(tmp_path, pool):
    finished = run_one(pool, make_job(tmp_path, shell="no-such-program-8f3b"))
    assert not finished.ok and finished.exit_code == 127


def test_a_missing_working_folder_is_not_reported_as_a_missing_program(tmp_path, pool):
    missing = tmp_path / "no-such-folder"
    finished = run_one(pool, make_job(tmp_path, argv=("true",), cwd=str(missing)))
    assert not finished.ok
    assert "program not found" not in finished.error
    assert str(missing) in finished.error


def test_worker_and_task_each_lead_their_own_session(tmp_path, pool):
    mark = marker()
    p, reports = pool(1)
    p.submit(make_job(tmp_path, shell=f"exec sleep {mark}"))
    task_pid = reports.until_started("t").pid
    worker_pid = psutil.Process(task_pid).ppid()
    assert os.getsid(task_pid) == task_pid
    assert os.getsid(worker_pid) == worker_pid
    assert os.getsid(worker_pid) != os.getsid(0)
    p.terminate("t")
    reports.until_finished("t")
    assert_gone(mark)


def test_a_finished_task_leaves_nothing_running(tmp_path, pool):
    mark = marker()
    job = make_job(tmp_path, shell=f"sleep {mark} & setsid sleep {mark} & echo spawned")
    assert run_one(pool, job).ok
    assert_gone(mark)


def test_workers_are_reused_and_capped_at_size(tmp_path, pool):
    p, reports = pool(2)
    assert p.idle() == 2
    for round_ in range(3):
        for i in range(2):
            p.submit(make_job(tmp_path, f"r{round_}-{i}", shell="echo $PPID"))
        assert p.idle() == 0 and sorted(p.busy()) == [f"r{round_}-0", f"r{round_}-1"]
        with pytest.raises(RuntimeError):
            p.submit(make_job(tmp_path, "extra", shell="true"))
        for i in range(2):
            assert reports.until_finished(f"r{round_}-{i}").ok
        assert p.idle() == 2
    workers = {(tmp_path / f"{tid}.log").read_text().strip() for tid in reports.finished}
    assert len(workers) == 2  # six tasks, two workers


# ---------------------------------------------------------------- call tasks


def test_call_records_its_return_value(calls, pool):
    finished = run_one(pool, make_job(calls, call="poolcalls:add", args=(2, 3), kwargs={"scale": 10}))
    assert finished.ok and finished.value == 50


def test_call_runs_in_its_folder_first_on_sys_path(calls, pool):
    finished = run_one(pool, make_job(calls, "where-task", call="poolcalls:where"))
    assert finished.ok
    assert finished.value == {"cwd": str(calls), "path0": str(calls), "task": "where-task"}


def test_call_value_that_is_not_json_is_recorded_as_its_repr(calls, pool):
    finished = run_one(pool, make_job(calls, call="poolcalls:unjsonable"))
    assert finished.ok and finished.value == {"repr": "{1, 2}"}


def test_call_exception_fails_with_traceback_in_log(calls, pool):
    job = make_job(calls, call="poolcalls:boom")
    finished = run_one(pool, job)
    assert not finished.ok
    assert finished.error == "ValueError: boom in a call"
    log = Path(job.log_path).read_text()
    assert "before the failure" in log
    assert "Traceback (most recent call last)" in log and "ValueError: boom in a call" in log


def test_call_with_a_return_value_just_under_the_pipe_buffer(calls, pool):
    finished = run_one(pool, make_job(calls, call="poolcalls:big", args=(60_000,)))
    assert finished.ok and finished.value == "x" * 60_000


def test_call_with_a_large_return_value_finishes(calls, pool):
    p, reports = pool(1)
    p.submit(make_job(calls, call="poolcalls:big", args=(200_000,)))
    finished = reports.until_finished("t", timeout=10)  # it takes milliseconds when it works
    assert finished.ok and finished.value == "x" * 200_000


@pytest.mark.parametrize("target", ["poolcalls:missing", "nosuchmodule_4c2:f"])
def test_call_that_cannot_be_imported_fails(calls, pool, target):
    job = make_job(calls, call=target)
    finished = run_one(pool, job)
    assert not finished.ok and finished.error
    assert "Traceback" in Path(job.log_path).read_text()


@pytest.mark.parametrize(("func", "expect"), [
    ("exit3", "code 3"),
    ("segfault", "SIGSEGV"),
    ("kill9", "SIGKILL"),
    ("system_exit", "SystemExit"),
])
def test_a_crashing_call_fails_only_its_task_and_the_worker_goes_on(calls, pool, func, expect):
    p, reports = pool(1)
    p.submit(make_job(calls, "crash", call=f"poolcalls:{func}"))
    crashed = reports.until_finished("crash")
    assert not crashed.ok
    assert expect in crashed.error
    p.submit(make_job(calls, "after", call="poolcalls:add", args=(1, 1)))
    after = reports.until_finished("after")
    assert after.ok and after.value == 2


# ---------------------------------------------------------------- stopping


def test_terminate_ends_the_whole_tree_including_setsid_descendants(tmp_path, pool):
    mark = marker()
    ready = tmp_path / "ready"
    job = make_job(tmp_path, shell=f"sleep {mark} & setsid sleep {mark} & touch {ready}; sleep {mark}")
    p, reports = pool(1)
    p.submit(job)
    reports.until_started("t")
    wait_until(ready.exists, what="the task to start its children", timeout=DEADLINE, every=POLL)
    wait_until(lambda: len(sleepers(mark)) == 3, what="three marker processes", timeout=DEADLINE, every=POLL)
    p.terminate("t")
    finished = reports.until_finished("t")
    assert not finished.ok
    assert finished.signal == signal.SIGTERM
    assert_gone(mark)


def test_terminate_escalates_to_sigkill_after_the_grace_period(tmp_path, pool):
    mark = marker()
    got_term = tmp_path / "got-term"
    ready = tmp_path / "ready"
    # the shell ignores SIGTERM and so does its sleep (an ignored signal stays ignored across exec)
    job = make_job(tmp_path, shell=f"trap 'echo term >> {got_term}' TERM; touch {ready}; "
                   f"(trap '' TERM; exec sleep {mark}); echo still here; sleep {mark}")
    p, reports = pool(1, kill_grace=1.0)
    p.submit(job)
    reports.until_started("t")
    wait_until(lambda: ready.exists() and marker_procs(mark), what="the task to start", timeout=DEADLINE,
               every=POLL)
    sent = time.time()
    p.terminate("t")
    finished = reports.until_finished("t")
    assert finished.signal == signal.SIGKILL or finished.exit_code == 128 + signal.SIGKILL
    assert finished.ended_at - sent >= 0.9  # SIGKILL only after the grace period
    assert reports.escalated == [Escalated("t", 1, 1.0)]  # and it says so, once
    assert_gone(mark)


def test_terminate_with_kill_does_not_wait_for_the_grace_period(tmp_path, pool):
    mark = marker()
    job = make_job(tmp_path, shell=f"trap '' TERM; sleep {mark}")
    p, reports = pool(1, kill_grace=60.0)
    p.submit(job)
    reports.until_started("t")
    wait_until(lambda: marker_procs(mark), what="the task to start", timeout=DEADLINE, every=POLL)
    p.terminate("t", kill=True)
    finished = reports.until_finished("t")  # well before the 60 s grace
    assert not finished.ok and not reports.escalated  # a kill asked for is no escalation
    assert_gone(mark)


def test_shutdown_stops_running_tasks_and_workers(tmp_path, pool):
    mark = marker()
    p, reports = pool(2)
    for tid in ("a", "b"):
        p.submit(make_job(tmp_path, tid, shell=f"sleep {mark} & setsid sleep {mark}; wait"))
    workers = {psutil.Process(reports.until_started(tid).pid).ppid() for tid in ("a", "b")}
    wait_until(lambda: len(sleepers(mark)) == 4, what="four marker processes", timeout=DEADLINE, every=POLL)
    p.shutdown()
    assert_gone(mark)
    wait_until(lambda: not any(psutil.pid_exists(w) and psutil.Process(w).status() != psutil.STATUS_ZOMBIE
                               for w in workers), what="the workers to exit", timeout=DEADLINE, every=POLL)
    p.shutdown()  # safe twice


def test_a_killed_worker_fails_only_its_task_and_is_replaced(tmp_path, pool):
    mark = marker()
    p, reports = pool(2)
    p.submit(make_job(tmp_path, "victim", shell=f"sleep {mark}"))
    p.submit(make_job(tmp_path, "bystander", shell="sleep 0.5"))
    reports.until_started("victim")
    wait_until(lambda: sleepers(mark), what="the victim's sleep", timeout=DEADLINE, every=POLL)
    kill_worker_of(reports, "victim")
    died = reports.until_finished("victim")
    assert not died.ok
    assert "worker" in died.error and "died" in died.error and "SIGKILL" in died.error
    assert reports.until_finished("bystander").ok
    assert p.idle() == 2
    p.submit(make_job(tmp_path, "next", shell="echo replaced"))
    assert reports.until_finished("next").ok
    assert "replaced" in (tmp_path / "next.log").read_text()
    assert_gone(mark)  # the task's own process group is killed with its worker


def test_a_killed_worker_leaves_no_setsid_descendant_behind(tmp_path, pool):
    mark = marker()
    p, reports = pool(1)
    p.submit(make_job(tmp_path, "victim", shell=f"sleep {mark} & setsid sleep {mark}; wait"))
    reports.until_started("victim")
    wait_until(lambda: len(sleepers(mark)) == 2, what="the victim's processes", timeout=DEADLINE, every=POLL)
    kill_worker_of(reports, "victim")
    assert not reports.until_finished("victim").ok
    assert_gone(mark, timeout=3)


def test_a_task_whose_worker_died_keeps_its_start_time(tmp_path, pool):
    mark = marker()
    p, reports = pool(1)
    p.submit(make_job(tmp_path, "victim", shell=f"sleep {mark}"))
    started = reports.until_started("victim")
    kill_worker_of(reports, "victim")
    died = reports.until_finished("victim")
    assert died.started_at == started.started_at  # the same value, passed on
    assert died.ended_at >= died.started_at
    assert_gone(mark)


def test_a_worker_that_died_while_idle_is_replaced(tmp_path, pool):
    p, reports = pool(1)
    p.submit(make_job(tmp_path, "first", shell="echo $PPID"))
    assert reports.until_finished("first").ok
    worker = int((tmp_path / "first.log").read_text())
    os.kill(worker, signal.SIGKILL)  # the OOM killer may pick an idle worker too
    wait_until(lambda: _gone(worker), what="the idle worker to die", timeout=DEADLINE, every=POLL)
    p.submit(make_job(tmp_path, "second", shell="echo ran"))
    assert reports.until_finished("second").ok


@pytest.mark.parametrize(("code", "exit_code"), [(0, 0), (None, 0), (3, 3)])
def test_sys_exit_in_a_call_is_its_exit_code(calls, pool, code, exit_code):
    finished = run_one(pool, make_job(calls, call="sys:exit", args=(code,)))
    assert finished.ok is (exit_code == 0)
    assert finished.exit_code == exit_code


def _gone(pid: int) -> bool:
    """Dead or a zombie; a process reaped between two looks at it counts as dead."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
