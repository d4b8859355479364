"""End to end: machine-wide locks between separate novaproc processes. Two runs whose tasks
write one shared absolute file, or run git, never overlap; a waiting task names its holder;
`--if-busy` sees another live run of the same file; `novaproc lock` holds a run's task back.

Tasks record when they start and end (date +%s.%N, one file per task) and the checks compare
those intervals; every novaproc process of a test shares that test's private NOVA_LOCK_DIR.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from pathlib import Path

import pytest
from support.repo import git, make_repo
from support.sandbox import CLI_POLL, RUN_ID, Sandbox, Spawned
from support.stamps import stamp
from support.tasks import tasks_toml, write_tasks
from support.waiting import shell_wait_for, wait_for_file, wait_until


def timed(name: str, body: str, stamps: Path) -> str:
    """`body` between a start and an end stamp in stamps/<name>.start and .end."""
    return f"{stamp(stamps / f'{name}.start')}; {body}; {stamp(stamps / f'{name}.end')}"


def times(path: Path) -> list[float]:
    return [float(x) for x in path.read_text().split()] if path.exists() else []


def intervals(stamps: Path) -> dict[str, tuple[float, float]]:
    """name -> (start, end) of every task that recorded both."""
    found = {}
    for start in sorted(stamps.glob("*.start")):
        end = start.with_suffix(".end")
        (begun,), (ended,) = times(start), times(end)
        found[start.stem] = (begun, ended)
    return found


def assert_never_overlap(spans: dict[str, tuple[float, float]]) -> None:
    for (a, (a0, a1)), (b, (b0, b1)) in itertools.combinations(sorted(spans.items()), 2):
        assert a1 <= b0 or b1 <= a0, f"{a} {a0:.3f}..{a1:.3f} overlaps {b} {b0:.3f}..{b1:.3f}"


# ------------------------------------------------------------------------------- two runs

@pytest.mark.parametrize("second_declares", ["the file", "its folder", "a symlink to its folder"])
def test_two_runs_writing_one_absolute_file_never_overlap(tmp_path: Path, box: Sandbox,
                                                          second_declares: str) -> None:
    shared, stamps = tmp_path / "shared" / "data.txt", tmp_path / "stamps"
    shared.parent.mkdir()
    stamps.mkdir()
    (tmp_path / "link").symlink_to(shared.parent)
    declared = {"the file": str(shared), "its folder": f"{shared.parent}/",
                "a symlink to its folder": str(tmp_path / "link" / "data.txt")}[second_declares]

    def tasks(run: str, writes: str) -> dict[str, dict[str, object]]:
        return {f"{run}{i}": {"cmd": timed(f"{run}{i}", f"echo {run}{i} >> {shared}; sleep 0.2", stamps),
                              "writes": [writes]} for i in range(3)}

    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks_toml(tasks("a", str(shared)))})  # worktrees
    plain = write_tasks(tmp_path / "plain", tasks("b", declared))  # outside git: in place

    first = box.spawn("run", repo / "tasks.toml", cwd=repo)
    second = box.spawn("run", plain, cwd=plain.parent)
    ran = [first.finish(), second.finish()]

    assert [r.code for r in ran] == [0, 0], ran
    spans = intervals(stamps)
    assert sorted(spans) == ["a0", "a1", "a2", "b0", "b1", "b2"]
    assert_never_overlap(spans)
    assert sorted(shared.read_text().split()) == sorted(spans)


def test_two_runs_reading_one_absolute_file_run_together(tmp_path: Path, box: Sandbox) -> None:
    shared = tmp_path / "shared.db"
    shared.write_text("data\n")
    runs = []
    for me, other in (("one", "two"), ("two", "one")):
        # each task waits (a while at most) for the other to be running: shared locks must let them meet
        mine, theirs = tmp_path / f"{me}.running", tmp_path / f"{other}.running"
        meet = f"touch {mine}; {shell_wait_for(theirs, limit=10)}; test -e {theirs}"
        runs.append(write_tasks(tmp_path / me, {me: {"cmd": meet, "reads": [str(shared)]}}))

    spawned = [box.spawn("run", tasks, cwd=tasks.parent) for tasks in runs]
    ran = [run.finish() for run in spawned]

    assert [r.code for r in ran] == [0, 0], ran


def test_a_task_waiting_for_a_lock_shows_its_holder_in_json_events(tmp_path: Path, box: Sandbox) -> None:
    shared, held, release = tmp_path / "shared.db", tmp_path / "held", tmp_path / "release"
    holder_tasks = write_tasks(tmp_path / "holder", {
        "migrate": {"cmd": f"touch {held}; {shell_wait_for(release)}", "writes": [str(shared)]}})
    waiter_tasks = write_tasks(tmp_path / "waiter", {
        "report": {"cmd": f"touch {tmp_path / 'report-ran'}", "reads": [str(shared)]}})
    holder = box.spawn("run", holder_tasks, "--json", cwd=holder_tasks.parent)
    holder_id = holder.wait_event(lambda e: e["event"] == "run_started", "the holder to start")["run_id"]
    holder_pid = holder.wait_event(lambda e: e["event"] == "run_started", "the holder to start")["pid"]
    wait_for_file(held)

    waiter = box.spawn("run", waiter_tasks, "--json", cwd=waiter_tasks.parent)
    waiting = waiter.wait_event(lambda e: e.get("state") == "waiting", "the task to wait")

    assert waiting["task"] == "report"
    reason = waiting["reason"]
    assert str(shared) in reason and f"run {holder_id}" in reason and "migrate" in reason, reason
    assert str(holder_pid) in reason, reason
    assert not (tmp_path / "report-ran").exists()
    release.touch()
    assert holder.finish().code == 0
    done = waiter.finish()
    assert done.code == 0, done
    assert (tmp_path / "report-ran").exists()


def busy_file(tmp_path: Path, box: Sandbox) -> tuple[Path, Spawned]:
    """A tasks file and a live run of it, whose one task runs until tmp_path/go exists; every
    run of the file stamps tmp_path/starts and tmp_path/ends."""
    starts, ends, go = tmp_path / "starts", tmp_path / "ends", tmp_path / "go"
    tasks = write_tasks(tmp_path / "work", {
        "job": {"cmd": f"{stamp(starts)}; {shell_wait_for(go)}; {stamp(ends)}"}})
    first = box.spawn("run", tasks, cwd=tasks.parent)
    wait_for_file(starts)
    return tasks, first


def live_runs(box: Sandbox) -> int:
    return sum(r["status"] == "running" for r in json.loads(box.cli("status", "--json").out))


def wait_live_runs(box: Sandbox, n: int) -> None:
    wait_until(lambda: live_runs(box) == n, f"{n} live runs", every=CLI_POLL)


def test_if_busy_skip_and_wait_against_a_live_run_of_the_same_file(tmp_path: Path, box: Sandbox) -> None:
    tasks, first = busy_file(tmp_path, box)
    starts, ends = tmp_path / "starts", tmp_path / "ends"

    skipped = box.cli("run", tasks, "--if-busy", "skip", cwd=tasks.parent)

    assert skipped.code == 75, skipped
    assert "busy" in skipped.err and "Traceback" not in skipped.text
    assert re.search(r"another run of it is live \(run [0-9a-f]+ \(pid \d+\)\)", skipped.err), skipped.err
    assert "@run." not in skipped.err  # the lock's internal name is not the user's business
    assert len(times(starts)) == 1

    waiter = box.spawn("run", tasks, "--if-busy", "wait", cwd=tasks.parent)
    wait_live_runs(box, 2)
    time.sleep(0.5)
    assert len(times(starts)) == 1  # it waits: its task has not started
    (tmp_path / "go").touch()

    assert first.finish().code == 0
    waited = waiter.finish()
    assert waited.code == 0, waited
    (_, second_start), (first_end, _) = times(starts), times(ends)
    assert second_start >= first_end
    listed = json.loads(box.cli("status", "--json").out)
    assert sorted(r["status"] for r in listed) == ["done", "done"], listed  # the skipped run left nothing


def test_a_run_waiting_for_another_run_of_its_file_says_so(tmp_path: Path, box: Sandbox) -> None:
    tasks, first = busy_file(tmp_path, box)
    plain = box.spawn("run", tasks, cwd=tasks.parent)
    as_json = box.spawn("run", tasks, "--json", cwd=tasks.parent)
    wait_live_runs(box, 3)
    (tmp_path / "go").touch()
    done = [run.finish() for run in (first, plain, as_json)]

    assert [r.code for r in done] == [0, 0, 0], done
    assert "waiting for the other run" in done[1].err, done[1]
    assert any(e["event"] == "message" and "waiting for the other run" in e.get("text", "")
               for e in done[2].events), done[2]


def test_a_background_run_of_a_busy_file_with_if_busy_skip_exits_75(tmp_path: Path, box: Sandbox) -> None:
    tasks, first = busy_file(tmp_path, box)
    try:
        skipped = box.cli("run", "--background", "--if-busy", "skip", tasks, cwd=tasks.parent)
    finally:
        (tmp_path / "go").touch()
        first.finish()

    assert skipped.code == 75, skipped
    assert skipped.out == "" and "busy" in skipped.err, skipped


def test_a_background_run_of_a_busy_file_returns_at_once(tmp_path: Path, box: Sandbox) -> None:
    tasks, first = busy_file(tmp_path, box)
    try:
        launched = box.cli("run", "--background", tasks, cwd=tasks.parent, timeout=5)
    finally:
        (tmp_path / "go").touch()
        assert first.finish().code == 0

    run_id = launched.out.strip()
    assert launched.code == 0 and RUN_ID.fullmatch(run_id), launched
    assert box.cli("wait", run_id).code == 0
    assert len(times(tmp_path / "starts")) == 2


def test_cancel_of_a_run_waiting_for_its_busy_file(tmp_path: Path, box: Sandbox) -> None:
    tasks, first = busy_file(tmp_path, box)
    try:
        launched = box.cli("run", "--background", tasks, cwd=tasks.parent, timeout=20)
        run_id = launched.out.strip()
        wait_live_runs(box, 2)

        cancelled = box.cli("cancel", run_id)
        status = box.status(run_id)
    finally:
        (tmp_path / "go").touch()
        assert first.finish().code == 0

    assert cancelled.code == 0, cancelled
    assert status["status"] == "cancelled", status
    assert len(times(tmp_path / "starts")) == 1  # its task never ran


def test_git_tasks_of_two_concurrent_runs_never_overlap(tmp_path: Path, box: Sandbox) -> None:
    stamps = tmp_path / "stamps"
    stamps.mkdir()

    def tasks(run: str) -> dict[str, dict[str, object]]:
        return {
            # detected as kind git from the command
            "tag": {"cmd": timed(f"{run}-tag", "git status >/dev/null && git tag x-$NOVA_TASK_ID "
                                 "&& sleep 0.2", stamps)},
            "explicit": {"cmd": timed(f"{run}-explicit", "sleep 0.2", stamps), "kind": "git"},
        }

    repos = [make_repo(tmp_path / run, {"tasks.toml": tasks_toml(tasks(run))}) for run in ("r1", "r2")]
    plan = json.loads(box.cli("plan", repos[0] / "tasks.toml", "--json", cwd=repos[0]).out)
    assert {t["id"]: t["kind"] for t in plan["tasks"]} == {"tag": "git", "explicit": "git"}

    runs = [box.spawn("run", repo / "tasks.toml", cwd=repo) for repo in repos]
    ran = [run.finish() for run in runs]

    assert [r.code for r in ran] == [0, 0], ran
    spans = intervals(stamps)
    assert len(spans) == 4
    assert_never_overlap(spans)
    for repo in repos:
        assert git(repo, "tag", "-l").split() == ["x-tag"]


# ------------------------------------------------------------------------------- novaproc lock

def test_a_lock_held_with_the_lock_command_holds_a_runs_task_back(tmp_path: Path, box: Sandbox) -> None:
    stamps, release, released = tmp_path / "stamps", tmp_path / "release", tmp_path / "released"
    stamps.mkdir()
    tasks = tasks_toml({"edit": {"cmd": timed("edit", "echo edited >> data/db.txt", stamps),
                                 "writes": ["data/db.txt"]}})
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks, "data/db.txt": "base\n"})
    # relative to the current folder, like flock(1): the same lock as the tasks file's path
    holder = box.spawn("lock", "data/db.txt", "--", "sh", "-c",
                       f"{shell_wait_for(release)}; {stamp(released)}", cwd=repo)

    def listed() -> list[dict[str, object]]:
        ran = box.cli("locks", "--json")
        assert ran.code == 0, ran
        return list(json.loads(ran.out)["locks"])

    wait_until(lambda: any(r["pid"] == holder.pid and r["state"] == "held" for r in listed()),
               "`locks` to show the holder", every=CLI_POLL)
    run = box.spawn("run", repo / "tasks.toml", "--json", cwd=repo)
    waiting = run.wait_event(lambda e: e.get("state") == "waiting", "the task to wait")
    assert str(holder.pid) in waiting["reason"], waiting
    assert any(r["state"] == "waiting" and r["task"] == "edit" for r in listed())
    assert not (stamps / "edit.start").exists()

    release.touch()
    assert holder.finish().code == 0
    ran = run.finish()

    assert ran.code == 0, ran
    (started,), (freed,) = times(stamps / "edit.start"), times(released)
    assert started >= freed
    assert git(repo, "show", "main:data/db.txt", strip=False) == "base\nedited\n"


def test_the_lock_command_gives_up_with_75_on_a_file_a_run_holds(tmp_path: Path, box: Sandbox) -> None:
    shared, held, release = tmp_path / "shared.db", tmp_path / "held", tmp_path / "release"
    tasks = write_tasks(tmp_path / "work", {
        "migrate": {"cmd": f"touch {held}; {shell_wait_for(release)}", "writes": [str(shared)]}})
    run = box.spawn("run", tasks, "--json", cwd=tasks.parent)
    run_id = run.wait_event(lambda e: e["event"] == "run_started", "the run to start")["run_id"]
    wait_for_file(held)

    try:
        timed_out = box.cli("lock", shared, "--timeout", "0.3", "--", "touch", tmp_path / "ran", cwd=tmp_path)
        shared_too = box.cli("lock", "--shared", shared, "--timeout", "0.3", "--", "true", cwd=tmp_path)
    finally:
        release.touch()
    assert not (tmp_path / "ran").exists()  # the command did not run
    after = box.cli("lock", shared, "--timeout", "10", "--", "touch", tmp_path / "ran", cwd=tmp_path)

    assert timed_out.code == 75, timed_out
    assert run_id in timed_out.err and "migrate" in timed_out.err, timed_out  # names the holder
    assert shared_too.code == 75, shared_too
    assert run.finish().code == 0
    assert after.code == 0, after
    assert (tmp_path / "ran").exists()
