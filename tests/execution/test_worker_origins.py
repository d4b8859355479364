"""Where workers come from: forked by the supervisor at its start (`prefork`), or from a
forkserver (a pool nobody forked for, a replacement). Real processes throughout; the forking
process is a fresh interpreter, as a supervisor is, since a test process runs threads."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import psutil
from support.pool import DEADLINE, POLL, make_job
from support.processes import assert_gone, marker, sleepers
from support.waiting import wait_until

from novaproc.execution import pool as pool_module
from novaproc.execution.pool import prefork

FORKING = """
import fcntl, json, os, sys, time
from novaproc.execution.pool import WorkerPool, prefork
from novaproc.messages import Finished, Job

folder = sys.argv[1]
lock = open(os.path.join(folder, "held.lock"), "w")
fcntl.flock(lock, fcntl.LOCK_EX)
read, write = os.pipe()
forked = prefork(2)
pool = WorkerPool(2, 1.0, adopt_orphans=True)
gate = os.path.join(folder, "gate")
for tid in ("a", "b"):
    pool.submit(Job(tid, 1, os.path.join(folder, tid + ".log"), folder,
                    shell=f"echo $PPID > {tid}.pid; while [ ! -e {gate} ]; do sleep 0.05; done"))
print(json.dumps({"forked": forked, "me": os.getpid(), "pipe": os.fstat(read).st_ino,
                  "forkserver": pool_module_state()}), flush=True)
done = {}
while len(done) < 2:
    for report in pool.wait(1.0):
        if isinstance(report, Finished):
            done[report.task_id] = report.ok and report.error is None
pool.shutdown()
print(json.dumps(done), flush=True)
"""

STATE = """
def pool_module_state():
    from multiprocessing import forkserver
    return forkserver._forkserver._forkserver_pid
"""


def test_forked_workers_are_ours_and_hold_no_lock_or_pipe_of_the_supervisor(tmp_path):
    script = tmp_path / "forking.py"
    script.write_text(STATE + FORKING)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        said = json.loads(proc.stdout.readline())
        assert said["forked"] == 2 and said["forkserver"] is None  # no forkserver was needed
        for tid in ("a", "b"):
            wait_until(lambda t=tid: (tmp_path / f"{t}.pid").exists() and (tmp_path / f"{t}.pid").read_text(),
                       what=f"{tid}'s worker", timeout=DEADLINE, every=POLL)
        workers = [int((tmp_path / f"{tid}.pid").read_text()) for tid in ("a", "b")]
        for worker in workers:
            assert psutil.Process(worker).ppid() == said["me"]
            links = [os.readlink(f"/proc/{worker}/fd/{fd}") for fd in os.listdir(f"/proc/{worker}/fd")]
            assert str(tmp_path / "held.lock") not in links, links
            assert f"pipe:[{said['pipe']}]" not in links, links
    finally:
        (tmp_path / "gate").touch()
    out, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1]) == {"a": True, "b": True}


def test_no_worker_is_forked_while_another_thread_runs():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert prefork(1) == 0
        assert not pool_module._spares
    finally:
        stop.set()
        thread.join()


def test_a_pool_without_forked_workers_survives_its_forkserver_killed(tmp_path, pool):
    """4a3af03: the workers' sentinels are the forkserver's pipes, so its death looked like every
    worker's; and the tasks after it need workers a dead forkserver can no longer fork."""
    mark = marker()
    p, reports = pool(3)
    for tid in ("t0", "t1"):
        p.submit(make_job(tmp_path, tid, shell=f"sleep {mark}; true"))
    wait_until(lambda: len(sleepers(mark)) == 2, what="both tasks", timeout=DEADLINE, every=POLL)
    from multiprocessing import forkserver

    server = psutil.Process(forkserver._forkserver._forkserver_pid)
    server.kill()
    # dead (not reaped: that is multiprocessing's to do), as when a worker is next needed
    wait_until(lambda: server.status() == psutil.STATUS_ZOMBIE, what="the forkserver's death",
               timeout=DEADLINE, every=POLL)
    p.submit(make_job(tmp_path, "after", shell="echo after"))  # needs a third worker
    assert reports.until_finished("after").ok
    for proc in sleepers(mark):
        proc.kill()
    for tid in ("t0", "t1"):
        finished = reports.until_finished(tid)
        assert finished.error is None, finished.error  # its task ended, its worker did not die
    assert_gone(mark)
    assert Path(tmp_path / "after.log").read_text() == "after\n"


def test_a_dead_forked_worker_is_replaced_and_its_orphans_killed_but_not_its_siblings(tmp_path):
    """The forked workers are the supervisor's children, as adopted orphans are: ending the
    orphans of one that died must spare the others."""
    script = tmp_path / "sibling.py"
    mark = marker()
    script.write_text(textwrap.dedent(f"""
        import json, os, sys
        from novaproc.execution.pool import WorkerPool, prefork
        from novaproc.messages import Finished, Job


        def main(folder):
            assert prefork(2) == 2
            pool = WorkerPool(2, 1.0, adopt_orphans=True)
            pool.submit(Job("victim", 1, folder + "/victim.log", folder,
                            shell="echo $PPID > victim.pid; setsid sleep {mark} & sleep {mark}"))
            pool.submit(Job("sibling", 1, folder + "/sibling.log", folder,
                            shell="while [ ! -e gate ]; do sleep 0.05; done"))
            done = {{}}
            while len(done) < 3:
                for report in pool.wait(1.0):
                    if isinstance(report, Finished):
                        done[report.task_id] = report.error
                        if report.task_id == "victim":  # the replacement comes from a forkserver
                            open(folder + "/gate", "w").close()
                            pool.submit(Job("next", 1, folder + "/next.log", folder, shell="echo next"))
            pool.shutdown()
            print(json.dumps(done), flush=True)


        if __name__ == "__main__":  # the forkserver imports this file again
            main(sys.argv[1])
    """))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: len(sleepers(mark)) == 2 and (tmp_path / "victim.pid").exists(),
                   what="the victim's sleeps", timeout=DEADLINE, every=POLL)
        os.kill(int((tmp_path / "victim.pid").read_text()), signal.SIGKILL)
        out, err = proc.communicate(timeout=DEADLINE)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    errors = json.loads(out.strip().splitlines()[-1])
    assert "died" in errors["victim"] and errors["sibling"] is None and errors["next"] is None, errors
    assert (tmp_path / "next.log").read_text() == "next\n"
    assert_gone(mark)


def test_a_stopped_forked_worker_is_killed_at_the_pools_end_not_waited_for(tmp_path):
    """A worker that does not end when told (stopped, stuck) is SIGKILLed after the wait, as a
    forkserver's is: its multiprocessing sentinel cannot say it ended, since it closed it."""
    script = tmp_path / "stopped.py"
    script.write_text(textwrap.dedent("""
        import os, signal, sys, time
        from novaproc.execution.pool import WorkerPool, prefork
        from novaproc.messages import Finished, Job


        def main(folder):
            assert prefork(2) == 2
            pool = WorkerPool(1, 0.5)  # takes one: the other stays a spare
            pool.submit(Job("t", 1, folder + "/t.log", folder, shell="echo $PPID > worker.pid"))
            while not [r for r in pool.wait(1.0) if isinstance(r, Finished)]:
                pass
            worker = int(open(folder + "/worker.pid").read())
            os.kill(worker, signal.SIGSTOP)
            began = time.monotonic()
            pool.shutdown()
            print(round(time.monotonic() - began, 1), flush=True)


        if __name__ == "__main__":
            main(sys.argv[1])
    """))
    try:
        proc = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=tmp_path, text=True,
                              capture_output=True, timeout=DEADLINE)
    finally:  # a stopped worker left behind would stay so for ever
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((tmp_path / "worker.pid").read_text()), signal.SIGKILL)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout.strip()) < 2 + 0.5 + 1 + 2  # wait, grace, the kill's second, slack
