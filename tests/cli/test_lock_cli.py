"""`novaproc lock` and `novaproc locks` through the real command line, in real processes.

Each test has its own lock folder (NOVA_LOCK_DIR), so nothing here touches the user's locks.
Two `novaproc run` processes sharing an absolute file: tests/test_e2e_locks.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.cli import run_cli, spawn_cli

# Records when it ran: "<start> <end>" in monotonic seconds (one clock for the whole machine).
RECORD = ("import sys, time; t = time.monotonic(); time.sleep(0.3)\n"
          "open(sys.argv[1], 'w').write(f'{t} {time.monotonic()}')")
# Says it holds the lock (creates a file), then runs until stopped or orphaned.
HOLD = ("import os, sys, time; open(sys.argv[1], 'w').close(); parent = os.getppid()\n"
        "while os.getppid() == parent: time.sleep(0.05)")
# Meets a partner: both must be inside their locks at the same time, or this times out with 1.
MEET = ("import sys, time, pathlib; pathlib.Path(sys.argv[1]).touch(); end = time.monotonic() + 20\n"
        "while not pathlib.Path(sys.argv[2]).exists():\n"
        "    time.sleep(0.01)\n"
        "    if time.monotonic() > end: sys.exit(1)")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"NOVA_LOCK_DIR": str(tmp_path / "locks")}


def start(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return spawn_cli(*args, cwd=cwd, env=env)


def wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    end = time.monotonic() + 30
    while not path.exists():
        assert proc.poll() is None, f"the holder ended early: {proc.communicate()}"
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.01)


def holding(args: list[str], tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """A `novaproc lock ARGS -- <hold>` process that holds its locks until stopped."""
    ready = tmp_path / f"ready-{time.monotonic_ns()}"
    proc = start(["lock", *args, "--", sys.executable, "-c", HOLD, str(ready)], tmp_path, env)
    wait_for(ready, proc)
    return proc


def test_the_commands_exit_code_is_passed_through(tmp_path: Path, env: dict[str, str]) -> None:
    done = run_cli("lock", "f", "--", sys.executable, "-c", "import sys; sys.exit(7)", cwd=tmp_path, env=env)
    assert done.returncode == 7, done.stderr
    done = run_cli("lock", "f", "--", sys.executable, "-c", "import os; os.kill(os.getpid(), 15)",
                   cwd=tmp_path, env=env)
    assert done.returncode == 143  # ended by SIGTERM: 128 + 15, like a shell
    done = run_cli("lock", "f", "--", "true", cwd=tmp_path, env=env)
    assert done.returncode == 0 and done.stdout == done.stderr == ""


def test_a_program_that_does_not_exist_gives_127_and_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    done = run_cli("lock", "f", "--", "no-such-program-here", "arg", cwd=tmp_path, env=env)
    assert done.returncode == 127
    assert done.stderr.splitlines() == ["novaproc: error: lock: no-such-program-here: command not found"]


@pytest.mark.parametrize("args", [["f"], ["f", "--"], ["--", "true"], ["@bad name", "--", "true"],
                                  ["f", "--timeout", "-1", "--", "true"], ["f", "--bogus", "--", "true"]])
def test_bad_usage_exits_2_with_one_line(tmp_path: Path, env: dict[str, str], args: list[str]) -> None:
    done = run_cli("lock", *args, cwd=tmp_path, env=env)
    assert done.returncode == 2, done
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("novaproc: error: lock: ")


def test_two_locks_on_one_path_serialize(tmp_path: Path, env: dict[str, str]) -> None:
    outs = [tmp_path / "one", tmp_path / "two"]
    procs = [start(["lock", "data.txt", "--", sys.executable, "-c", RECORD, str(out)], tmp_path, env)
             for out in outs]
    for proc in procs:
        assert proc.wait(timeout=60) == 0, proc.communicate()
    (a0, a1), (b0, b1) = ([float(t) for t in out.read_text().split()] for out in outs)
    assert a1 <= b0 or b1 <= a0, f"they ran together: {a0}-{a1} and {b0}-{b1}"


def test_shared_locks_run_together(tmp_path: Path, env: dict[str, str]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    procs = [start(["lock", "--shared", "docs/", "--", sys.executable, "-c", MEET, str(me), str(other)],
                   tmp_path, env) for me, other in ((a, b), (b, a))]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]


def test_timeout_gives_75_naming_the_holder(tmp_path: Path, env: dict[str, str]) -> None:
    holder = holding(["data.txt"], tmp_path, env)
    try:
        done = run_cli("lock", "--timeout", "0.2", "data.txt", "--", "true", cwd=tmp_path, env=env)
        assert done.returncode == 75
        assert done.stderr.startswith("novaproc: error: lock: gave up after 0.2s: ")
        assert f"held by novaproc lock {sys.executable} -c" in done.stderr
        assert f"(pid {holder.pid})" in done.stderr
    finally:
        holder.send_signal(signal.SIGTERM)
    assert holder.wait(timeout=30) == 143  # SIGTERM went on to the command, which it ended


def test_the_command_keeps_the_lock_when_novaproc_lock_alone_is_killed(tmp_path: Path,
                                                                       env: dict[str, str]) -> None:
    """As with flock(1): the lock lives as long as the command, so killing the wrapper alone
    does not let another holder in beside a command that still runs."""
    ready, pid_file = tmp_path / "ready", tmp_path / "pid"
    wrapper = start(["lock", "data", "--", "sh", "-c", f"echo $$ > {pid_file}; touch {ready}; exec sleep 60"],
                    tmp_path, env)
    wait_for(ready, wrapper)
    command = int(pid_file.read_text())
    try:
        wrapper.kill()
        wrapper.wait(timeout=30)
        done = run_cli("lock", "--timeout", "0.5", "data", "--", "true", cwd=tmp_path, env=env)
        assert done.returncode == 75, done.stderr  # held: its command runs on
    finally:
        os.kill(command, signal.SIGKILL)
    done = run_cli("lock", "--timeout", "20", "data", "--", "true", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr  # the command has ended: free


@pytest.mark.parametrize(("held", "wanted"), [
    ("sub/../data.txt", "{tmp}/data.txt"),  # another spelling of the same file
    ("data.txt", "{tmp}/link/data.txt"),  # through a symlinked folder
    ("dir/", "dir/deep/file.py"),  # a folder covers what lies under it
    ("dir/deep/file.py", "dir"),
    ("dir/*.py", "dir/x.py"),  # a glob counts as its folder
])
def test_paths_resolve_like_a_tasks_files_paths(tmp_path: Path, env: dict[str, str], held: str,
                                                wanted: str) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "link").symlink_to(tmp_path)
    holder = holding([held], tmp_path, env)
    try:
        elsewhere = tmp_path / "sub"
        target = wanted.format(tmp=tmp_path) if "{tmp}" in wanted else str(tmp_path / wanted)
        done = run_cli("lock", "--timeout", "0", target, "--", "true", cwd=elsewhere, env=env)
        assert done.returncode == 75, done.stderr
    finally:
        holder.kill()
        holder.wait()


def test_resources_and_their_capacity_from_nova_toml(tmp_path: Path, env: dict[str, str]) -> None:
    holder = holding(["@docker"], tmp_path, env)
    try:
        done = run_cli("lock", "@docker", "--timeout", "0", "--", "true", cwd=tmp_path, env=env)
        assert done.returncode == 75
        (tmp_path / "nova.toml").write_text("[resources]\ndocker = 2\n")
        done = run_cli("lock", "@docker", "--timeout", "0", "--", "true", cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
    finally:
        holder.kill()
        holder.wait()


def test_locks_shows_holders_and_waiters(tmp_path: Path, env: dict[str, str]) -> None:
    assert run_cli("locks", env=env).stdout.startswith("no locks held or waited for")
    holder = holding(["data.txt", "@deploy"], tmp_path, env)
    waiter = start(["lock", "--shared", "data.txt", "--", "true"], tmp_path, env)
    try:
        end = time.monotonic() + 30
        while len(rows := json.loads(run_cli("locks", "--json", env=env).stdout)["locks"]) < 3:
            assert time.monotonic() < end, rows
        data = os.path.realpath(tmp_path / "data.txt")
        assert [(r["what"], r["mode"], r["state"], r["pid"]) for r in rows] == [
            (data, "exclusive", "held", holder.pid), ("@deploy", "1 of 1", "held", holder.pid),
            (data, "shared", "waiting", waiter.pid)]
        assert rows[0]["command"].startswith("novaproc lock ") and rows[0]["run_id"] is None
        table = run_cli("locks", env=env).stdout.splitlines()
        assert table[0].split() == ["WHAT", "MODE", "STATE", "PID", "RUN", "TASK/COMMAND", "SINCE"]
        assert table[1].split()[:4] == [data, "exclusive", "held", str(holder.pid)]
    finally:
        holder.kill()
        holder.wait()
    assert waiter.wait(timeout=30) == 0  # the holder's death let it in


def test_the_locks_table_shows_commands_as_text_not_terminal_commands() -> None:
    from novaproc.cli.locks import render_locks
    from novaproc.locking.table import LockInfo

    row = LockInfo("/srv/db", "exclusive", True, 42, None, "", "make \x1b[2Jclear\x1b]0;title\x07", 0.0, 1)
    shown = render_locks([row], now=1.0)
    assert "\x1b" not in shown and "\x07" not in shown and "make clear" in shown
