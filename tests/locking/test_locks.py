"""The lock manager with real files and real processes: exclusion, order, waking, death, forks.

The stress test is the project's Jepsen-style check: 4 processes take random overlapping lock
sets, each logs when it entered and left its critical sections, and a checker proves that no
two conflicting sections overlapped in time.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from novaproc.errors import BusyError, EnvironmentFault, ExitCode, InternalError
from novaproc.inputs import paths
from novaproc.locking import manager as lock_manager
from novaproc.locking.manager import (
    Blocked,
    Grant,
    LockManager,
    LockRequest,
    Owner,
    prepare_lock_dir,
    run_request,
    snapshot,
    task_request,
)

HOLDER = """
import os, subprocess, sys, time
from pathlib import Path
from novaproc.locking.manager import LockManager, LockRequest, Owner
lock_dir, path, child = sys.argv[1:4]
manager = LockManager(Path(lock_dir), owner=Owner(run_id="r9", label="holder"))
manager.acquire(LockRequest("h", "holder_task", exclusive=(path,)))
pid = 0
if child == "fork":
    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
elif child == "exec":
    pid = subprocess.Popen(["sleep", "60"], close_fds=False).pid
print("held", pid, flush=True)
time.sleep(60)
"""

STRESS = """
import json, random, select, sys, time
from pathlib import Path
from novaproc.locking.manager import Grant, LockManager, LockRequest, Owner
lock_dir, root, log_path, seed, rounds = sys.argv[1:6]
rng = random.Random(int(seed))
tree = [root, root + "/a", root + "/a/x", root + "/a/y", root + "/b", root + "/b/z"]
with LockManager(Path(lock_dir), owner=Owner(label="stress " + seed)) as manager, open(log_path, "w") as log:
    for i in range(int(rounds)):
        exclusive, shared = rng.sample(tree, rng.randint(0, 2)), rng.sample(tree, rng.randint(0, 2))
        resources = {"docker": rng.randint(1, 2)} if rng.random() < 0.3 else {}
        request = LockRequest(f"r{i}", exclusive=tuple(exclusive), shared=tuple(shared),
                              resources=resources, capacities={"docker": 2})
        if rng.random() < 0.5:
            grant = manager.acquire(request)
        else:  # the supervisor's way: try, wait on the bell, try again
            while not isinstance(grant := manager.try_acquire(request), Grant):
                select.select([manager], [], [], 0.05)
        entered = time.monotonic_ns()
        if rng.random() < 0.2:
            time.sleep(0.001)
        left = time.monotonic_ns()
        manager.release(grant)
        log.write(json.dumps([entered, left, request.exclusive, request.shared, resources]) + "\\n")
"""

READER = """
import sys, time
from pathlib import Path
from novaproc.locking.manager import LockManager, LockRequest
lock_dir, path, stop = sys.argv[1:4]
with LockManager(Path(lock_dir)) as manager:
    request = LockRequest("read", shared=(path,))
    while not Path(stop).exists():
        grant = manager.acquire(request)
        print("in", flush=True)
        time.sleep(0.02)
        manager.release(grant)
"""


@pytest.fixture
def lock_dir(tmp_path: Path) -> Path:
    return tmp_path / "locks"


@pytest.fixture
def managers(lock_dir: Path) -> Iterator[list[LockManager]]:
    """Three owners in this process (kernel locks belong to open files, so they exclude each other)."""
    made = [LockManager(lock_dir, owner=Owner(run_id=f"run{i}", label="test")) for i in range(3)]
    yield made
    for manager in made:
        manager.close()


def x(*paths: str, key: str = "k", **resources: int) -> LockRequest:
    return LockRequest(key, key, exclusive=paths, resources=resources, capacities={"docker": 2})


def s(*paths: str, key: str = "k") -> LockRequest:
    return LockRequest(key, key, shared=paths)


# -------------------------------------------------------------------------- lock folder

def test_lock_folder_comes_from_the_environment_and_is_private(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NOVA_LOCK_DIR", str(tmp_path / "mine"))
    assert prepare_lock_dir() == tmp_path / "mine"
    assert stat.S_IMODE(os.stat(tmp_path / "mine").st_mode) == 0o700
    monkeypatch.delenv("NOVA_LOCK_DIR")
    assert str(lock_manager.default_lock_dir()) == f"/tmp/novaproc-{os.geteuid()}/locks"


def test_a_symlinked_or_world_writable_lock_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(EnvironmentFault, match=r"symbolic link.*NOVA_LOCK_DIR"):
        prepare_lock_dir(tmp_path / "link")
    (tmp_path / "open").mkdir()
    os.chmod(tmp_path / "open", 0o777)
    with pytest.raises(EnvironmentFault, match=r"writable by other users \(mode 777\)"):
        LockManager(tmp_path / "open")
    (tmp_path / "group").mkdir()
    os.chmod(tmp_path / "group", 0o770)  # the group's members are other users too
    with pytest.raises(EnvironmentFault, match=r"writable by other users \(mode 770\)"):
        LockManager(tmp_path / "group")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_lock_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    (tmp_path / "theirs").mkdir(mode=0o700)
    os.chown(tmp_path / "theirs", 65534, 65534)
    with pytest.raises(EnvironmentFault, match="another user"):
        prepare_lock_dir(tmp_path / "theirs")


# ------------------------------------------------------------------------- one process

def test_exclusive_shared_and_the_hierarchy_between_owners(managers: list[LockManager]) -> None:
    a, b, c = managers
    assert isinstance(a.try_acquire(s("/d")), Grant)
    assert isinstance(b.try_acquire(s("/d/x.csv")), Grant)  # readers coexist up and down the tree
    blocked = c.try_acquire(x("/d/x.csv/deeper"))
    assert isinstance(blocked, Blocked)
    assert blocked.describe() == f"/d held by run run0 task k (pid {os.getpid()}) and 1 more"
    assert isinstance(c.try_acquire(x("/e", key="other")), Grant)  # unrelated paths are free


def test_a_waiting_request_keeps_its_place_and_later_readers_queue_behind_a_writer(
        managers: list[LockManager]) -> None:
    a, b, c = managers
    first = a.try_acquire(s("/p"))
    assert isinstance(b.try_acquire(x("/p")), Blocked)  # joins the line
    blocked = c.try_acquire(s("/p"))  # would fit beside a's read lock, but b came first
    assert isinstance(blocked, Blocked)
    assert [(bl.held, bl.holder.run_id) for bl in blocked.blockers] == [(False, "run1")]
    assert "queued earlier by run run1" in blocked.describe()
    assert isinstance(b.try_acquire(x("/p")), Blocked)  # trying again keeps b's ticket
    a.release(first)
    granted = b.try_acquire(x("/p"))
    assert isinstance(granted, Grant)
    assert isinstance(c.try_acquire(s("/p")), Blocked)
    b.release(granted)
    assert isinstance(c.try_acquire(s("/p")), Grant)


def test_a_lock_set_is_all_or_nothing(managers: list[LockManager], lock_dir: Path) -> None:
    a, b, c = managers
    held = a.try_acquire(x("/x"))
    assert isinstance(b.try_acquire(x("/x", "/y")), Blocked)
    assert isinstance(c.try_acquire(x("/y")), Blocked)  # /y is promised to b, who holds nothing yet
    assert {(r.what, r.state) for r in snapshot(lock_dir) if r.run_id == "run1"} == {
        ("/x", "waiting"), ("/y", "waiting")}
    a.release(held)
    assert isinstance(b.try_acquire(x("/x", "/y")), Grant)


def test_resources_are_semaphores_and_serial_kinds_take_one(managers: list[LockManager]) -> None:
    a, b, c = managers
    assert isinstance(a.try_acquire(x(key="d1", docker=1)), Grant)
    assert isinstance(b.try_acquire(x(key="d2", docker=1)), Grant)
    blocked = c.try_acquire(x(key="d3", docker=1))
    assert isinstance(blocked, Blocked) and blocked.blockers[0].what == "@docker"
    git = LockRequest("g", "migrate", resources={"git": 1}, capacities={"git": 5})
    assert isinstance(a.try_acquire(git), Grant)
    assert isinstance(b.try_acquire(git), Blocked)


def test_cancel_leaves_the_line(managers: list[LockManager]) -> None:
    a, b, c = managers
    a.try_acquire(s("/p"))
    b.try_acquire(x("/p"))
    assert isinstance(c.try_acquire(s("/p")), Blocked)
    b.cancel(x("/p"))
    assert isinstance(c.try_acquire(s("/p")), Grant)


def test_acquire_times_out_with_busy_and_leaves_the_line(managers: list[LockManager], lock_dir: Path) -> None:
    a, b, _ = managers
    a.try_acquire(x("/p"))
    with pytest.raises(BusyError, match=r"gave up after 0\.2s: /p held by run run0") as caught:
        b.acquire(x("/p"), timeout=0.2)
    assert caught.value.exit_code == ExitCode.BUSY == 75
    assert [r.state for r in snapshot(lock_dir)] == ["held"]


def test_a_release_wakes_a_blocked_acquire_through_its_bell(managers: list[LockManager], monkeypatch) -> None:
    monkeypatch.setattr(lock_manager, "POLL_INTERVAL", 30.0)  # only the bell can wake it in time
    a, b, _ = managers
    held = a.try_acquire(x("/p"))
    got: list[Grant] = []
    waiter = threading.Thread(target=lambda: got.append(b.acquire(x("/p"), timeout=20)))
    waiter.start()
    while not any(r.state == "waiting" for r in a.snapshot()):
        time.sleep(0.01)
    a.release(held)
    waiter.join(timeout=10)
    assert got, "the waiter was not woken by the release"


def test_fileno_says_when_to_try_again(managers: list[LockManager]) -> None:
    a, b, _ = managers
    held = a.try_acquire(x("/p"))
    assert isinstance(b.try_acquire(x("/p")), Blocked)
    assert select.select([b], [], [], 0) == ([], [], [])
    a.release(held)
    assert select.select([b], [], [], 5)[0] == [b]
    assert isinstance(b.try_acquire(x("/p")), Grant)
    assert select.select([b], [], [], 0)[0] == []  # try_acquire drained it


def test_snapshot_close_and_the_files_left_behind(lock_dir: Path) -> None:
    a = LockManager(lock_dir, owner=Owner(run_id="3f2a", label="novaproc run t.toml"))
    a.try_acquire(LockRequest("fix", "fix_user", exclusive=("/src/auth.py",), resources={"docker": 1}))
    rows = [r.to_json() for r in snapshot(lock_dir)]
    assert [(r["what"], r["mode"], r["state"], r["run_id"], r["task"], r["pid"]) for r in rows] == [
        ("/src/auth.py", "exclusive", "held", "3f2a", "fix_user", os.getpid()),
        ("@docker", "1 of 1", "held", "3f2a", "fix_user", os.getpid())]
    assert len(list(lock_dir.glob("*.owner"))) == 1 and len(list(lock_dir.glob("*.bell"))) == 1
    a.close()
    a.close()
    assert snapshot(lock_dir) == []
    assert sorted(p.name for p in lock_dir.iterdir()) == ["table.lock"]  # the mutex file is never deleted


def test_misuse_is_refused(managers: list[LockManager], lock_dir: Path) -> None:
    a = managers[0]
    with pytest.raises(ValueError, match="not this process"):
        LockManager(lock_dir, owner=Owner(pid=os.getpid() + 1))
    a.try_acquire(x("/p", key="same"))
    with pytest.raises(ValueError, match="changed"):
        a.try_acquire(x("/q", key="same"))
    b = LockManager(lock_dir)
    b.close()
    with pytest.raises(InternalError):
        b.try_acquire(x("/p"))


def test_a_forked_child_cannot_use_or_release_its_parents_locks(managers: list[LockManager]) -> None:
    a, b, _ = managers
    a.try_acquire(x("/p"))
    pid = os.fork()
    if pid == 0:  # the child: its copies are closed, so it can neither use nor drop the parent's lock
        try:
            a.try_acquire(x("/q", key="child"))
        except InternalError:
            os._exit(0)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert isinstance(b.try_acquire(x("/p")), Blocked)  # the child's exit dropped nothing


def test_task_paths_become_the_same_locks_however_they_are_spelled(tmp_path: Path,
                                                                   managers: list[LockManager]) -> None:
    repo, shared = tmp_path / "repo", tmp_path / "cache"
    (repo / "src").mkdir(parents=True)
    shared.mkdir()
    (repo / "cache-link").symlink_to(shared)
    a, b, _ = managers
    request = task_request("t1", "fix", root=str(repo), writes=["src/*.py", f"{shared}/db.sqlite"],
                           reads=["docs/"], resources={"docker": 1}, capacities={"docker": 2})
    assert request.exclusive == (str(shared / "db.sqlite"), str(repo / "src"))
    assert request.shared == (str(repo / "docs"),)
    assert isinstance(a.try_acquire(request), Grant)
    via_link = task_request("t2", "other", root=str(repo), writes=["cache-link/db.sqlite"])
    assert isinstance(b.try_acquire(via_link), Blocked)
    with pytest.raises(paths.PathEscapes):
        task_request("t3", "bad", root=str(repo), writes=["../elsewhere"])


def test_run_request_finds_another_live_run_of_the_same_tasks_file(tmp_path: Path,
                                                                     managers: list[LockManager]) -> None:
    (tmp_path / "tasks.toml").touch()
    a, b, _ = managers
    a.acquire(run_request(str(tmp_path / "tasks.toml"), "r1"), timeout=0)
    spelled_otherwise = str(tmp_path / "." / "tasks.toml")
    with pytest.raises(BusyError, match=r"held by run run0 \(pid"):
        b.acquire(run_request(spelled_otherwise, "r2"), timeout=0)  # --if-busy skip
    b.acquire(run_request(str(tmp_path / "other.toml"), "r2"), timeout=0)
    a.close()
    b.acquire(run_request(spelled_otherwise, "r3"), timeout=5)  # --if-busy wait


def test_a_lock_folder_deleted_under_live_owners_is_an_error_not_a_split_table(lock_dir: Path) -> None:
    with LockManager(lock_dir) as manager:
        for path in lock_dir.iterdir():
            path.unlink()
        with pytest.raises(EnvironmentFault, match="deleted or replaced"):
            manager.try_acquire(x("/p"))


# ---------------------------------------------------------------------- many processes

def _start_holder(lock_dir: Path, path: str, child: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_dir), path, child],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    assert line and line[0] == "held", "the holder process did not start"
    return proc, int(line[1])


@pytest.mark.parametrize("child", ["none", "fork", "exec"])
def test_a_killed_holder_frees_its_locks_at_once_whatever_its_children_do(
        lock_dir: Path, child: str) -> None:
    holder, child_pid = _start_holder(lock_dir, "/shared/db.sqlite", child)
    manager = LockManager(lock_dir)
    try:
        blocked = manager.try_acquire(x("/shared"))
        assert isinstance(blocked, Blocked)
        assert blocked.describe() == f"/shared/db.sqlite held by run r9 task holder_task (pid {holder.pid})"
        os.kill(holder.pid, signal.SIGKILL)
        killed = time.monotonic()
        manager.acquire(x("/shared"), timeout=10)
        assert time.monotonic() - killed < 1.0
        if child_pid:
            os.kill(child_pid, 0)  # the child still runs: it was not what kept the lock
        assert not [p for p in lock_dir.glob("*.owner") if p.name.startswith(f"{holder.pid}-")]
    finally:
        manager.close()
        holder.kill()
        holder.wait()
        if child_pid:
            os.kill(child_pid, signal.SIGKILL)


def test_a_stream_of_readers_in_other_processes_does_not_starve_a_writer(tmp_path: Path,
                                                                         lock_dir: Path) -> None:
    stop = tmp_path / "stop"
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(lock_dir), "/data", str(stop)],
                                stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for reader in readers:
            for _ in range(3):
                assert reader.stdout.readline() == "in\n"
        with LockManager(lock_dir) as writer:
            writer.acquire(x("/data"), timeout=10)  # BusyError here would mean starvation
    finally:
        stop.touch()
        for reader in readers:
            reader.communicate(timeout=30)


# --------------------------------------------------------------------- Jepsen-style check

Record = tuple[int, int, int, tuple[str, ...], tuple[str, ...], dict[str, int]]


def _conflict(a: Record, b: Record) -> str | None:
    for (paths_a, mode_a), (paths_b, mode_b) in itertools.product(((a[3], "x"), (a[4], "s")),
                                                                  ((b[3], "x"), (b[4], "s"))):
        if mode_a == mode_b == "s":
            continue
        for p, q in itertools.product(paths_a, paths_b):
            if p == q or p.startswith(q + "/") or q.startswith(p + "/"):
                return f"{p} ({mode_a}) and {q} ({mode_b})"
    return None


def find_violations(records: list[Record], capacity: dict[str, int]) -> list[str]:
    """Critical sections of different processes that overlapped in time and should not have."""
    found: list[str] = []
    active: list[Record] = []
    for rec in sorted(records, key=lambda r: r[1]):
        active = [r for r in active if r[2] > rec[1]]
        for other in active:
            why = _conflict(rec, other)
            if why and other[0] != rec[0]:
                found.append(f"process {other[0]} and {rec[0]} overlapped on {why}")
        for name in rec[5]:
            users = [r for r in [*active, rec] if name in r[5]]
            if len(users) > 1 and sum(r[5][name] for r in users) > capacity[name]:
                found.append(f"@{name} over capacity: {[r[5][name] for r in users]}")
        active.append(rec)
    return found


def _concurrent_pairs(records: list[Record]) -> int:
    ordered = sorted(records, key=lambda r: r[1])
    return sum(1 for a, b in itertools.pairwise(ordered) if b[1] < a[2])


def test_the_checker_finds_overlaps() -> None:
    ok = [(1, 0, 10, ("/a",), (), {}), (2, 10, 20, ("/a/b",), (), {}), (3, 5, 15, (), ("/c",), {})]
    assert find_violations(ok, {}) == []
    bad = [(1, 0, 10, (), ("/a",), {}), (2, 5, 20, ("/a/b",), (), {}),
           (3, 0, 10, (), (), {"docker": 2}), (4, 5, 6, (), (), {"docker": 1})]
    assert find_violations(bad, {"docker": 2}) == [
        "process 1 and 2 overlapped on /a/b (x) and /a (s)", "@docker over capacity: [2, 1]"]


def test_four_processes_never_overlap_conflicting_critical_sections(tmp_path: Path, lock_dir: Path) -> None:
    rounds, procs = 300, 4
    logs = [tmp_path / f"log{i}.jsonl" for i in range(procs)]
    workers = [subprocess.Popen([sys.executable, "-c", STRESS, str(lock_dir), "/stress", str(log), str(i),
                                 str(rounds)]) for i, log in enumerate(logs)]
    for worker in workers:
        assert worker.wait(timeout=120) == 0
    records: list[Record] = []
    for i, log in enumerate(logs):
        for line in log.read_text().splitlines():
            entered, left, exclusive, shared, resources = json.loads(line)
            records.append((i, entered, left, tuple(exclusive), tuple(shared), resources))
    assert len(records) == rounds * procs
    assert find_violations(records, {"docker": 2}) == []
    assert _concurrent_pairs(records) > 0, "no two sections ever ran together: the test proved nothing"
    assert snapshot(lock_dir) == []
