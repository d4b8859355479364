"""End to end: runs that last. A `novaproc run` killed with SIGKILL at different moments is
`crashed` and `resume` finishes it without running again what had succeeded; background runs
are seen by status, logs, wait and cancel; durations of a run feed the next plan.

Each task appends its id to a counter file when it ends, so the tests count how often each
one really ran.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from support.processes import assert_gone, marker, sleepers, task_processes
from support.repo import is_ancestor, make_repo, nova_branches, rev, show
from support.sandbox import CLI_POLL, RUN_ID, Ran, Sandbox, Spawned, assert_clean, assert_no_leftovers
from support.tasks import tasks_toml, write_tasks
from support.waiting import shell_wait_for, wait_for_file, wait_until


def counts(path: Path) -> Counter[str]:
    return Counter(path.read_text().split()) if path.exists() else Counter()


def counted(tid: str, body: str, counter: Path, started: Path) -> str:
    """A task command: mark its start, do `body`, then count one finished run of `tid`."""
    return f'touch "{started / tid}"; {body}; echo {tid} >> "{counter}"'


def task_states(status: dict[str, Any]) -> dict[str, str]:
    return {t["id"]: t["state"] for t in status["tasks"]}


def wait_recorded(box: Sandbox, run_id: str, tasks: set[str], state: str = "done") -> None:
    """Until `status` says every task of `tasks` is in `state`."""
    wait_until(lambda: tasks <= {t for t, s in task_states(box.status(run_id)).items() if s == state},
               f"{', '.join(sorted(tasks))} to be recorded {state}", every=CLI_POLL)


def start_run(box: Sandbox, tasks: Path, cwd: Path) -> tuple[Spawned, str]:
    """`run TASKS --json` in the background, and its id once it has started."""
    run = box.spawn("run", tasks, "--json", cwd=cwd)
    return run, run.wait_event(lambda e: e["event"] == "run_started", "the run to start")["run_id"]


def kill_and_check_crashed(box: Sandbox, run: Spawned, run_id: str) -> dict[str, Any]:
    """SIGKILL the supervisor; nothing of the run may outlive it; status says crashed."""
    run.kill()
    wait_until(lambda: not task_processes(run_id), "the killed run's tasks to be gone", timeout=3)
    status = box.status(run_id)
    assert status["status"] == "crashed", status
    listed = box.cli("status")
    assert run_id in listed.out and "crashed" in listed.out, listed
    return status


@pytest.mark.parametrize("setting", ["worktree_setup", "verify"])
def test_a_killed_run_leaves_no_setup_or_verify_running(tmp_path: Path, box: Sandbox, setting: str) -> None:
    """The run's own commands die with a supervisor killed by SIGKILL, as its tasks do."""
    mark, began = marker(), tmp_path / "began"
    hang = f"touch {began}; setsid sleep {mark} & sleep {mark}"  # one child escapes its session
    tasks = tasks_toml({"a": {"cmd": "echo a > a.txt", "writes": ["a.txt"]}}, **{setting: hang})
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})
    run, _ = start_run(box, repo / "tasks.toml", repo)
    wait_for_file(began)
    wait_until(lambda: len(sleepers(mark)) == 2, f"both of {setting}'s sleeps to run")
    run.kill()
    assert_gone(mark)


@pytest.mark.parametrize("setting", ["worktree_setup", "verify"])
def test_ctrl_c_ends_a_long_setup_or_verify_at_once(tmp_path: Path, box: Sandbox, setting: str) -> None:
    mark, began = marker(), tmp_path / "began"
    tasks = tasks_toml({"a": {"cmd": "echo a > a.txt", "writes": ["a.txt"], "retries": 2},
                        "b": {"cmd": "echo b > b.txt", "writes": ["b.txt"], "depends_on": ["a"]}},
                       **{setting: f"touch {began}; sleep {mark}"})  # sleeps for minutes
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})
    base = rev(repo, "main")
    run, run_id = start_run(box, repo / "tasks.toml", repo)
    wait_for_file(began)
    run.proc.send_signal(signal.SIGINT)
    assert run.proc.wait(timeout=30) == 130
    assert_gone(mark)
    assert rev(repo, "main") == base  # nothing verified, nothing landed
    states = {t["id"]: t["state"] for t in box.status(run_id)["tasks"]}
    if setting == "worktree_setup":  # stopped at once: no retry of a, b never started
        assert states == {"a": "cancelled", "b": "cancelled"}, states
    if setting == "verify":  # a's result was merged: it waits, unverified
        assert f"nova/{run_id}/merged" in nova_branches(repo)
        assert show(repo, f"nova/{run_id}/merged", "a.txt") == "a\n"


def hold_for_writing(tmp_path: Path, box: Sandbox, path: Path):  # type: ignore[no-untyped-def]
    """Another run whose task holds `path` for writing until tmp_path/release exists."""
    folder, held = tmp_path / "holder", tmp_path / "held"
    folder.mkdir()
    write_tasks(folder, {
        "hold": {"cmd": f"touch {held}; {shell_wait_for(tmp_path / 'release')}", "writes": [str(path)]}})
    holder = box.spawn("run", folder / "tasks.toml", cwd=folder)
    wait_for_file(held)
    return holder


# ------------------------------------------------------------------------------- crash and resume

CRASH_TASKS = {"quick1": "0.4", "quick2": "0.4", "slow1": "30", "slow2": "30"}


def finish_slow_tasks(folder: Path) -> None:
    """Let the slow crash tasks end: they run until then (30 s at most), so however slowly a busy
    machine lets the test see quick1 and quick2 recorded, the slow ones are still running."""
    (folder / "finish").touch()


def crash_tasks_file(folder: Path, counter: Path, started: Path, gate: Path, *,
                     changed: str | None = None) -> Path:
    tasks: dict[str, dict[str, object]] = {
        # with a descendant in its own session, which must not outlive a killed supervisor either
        tid: {"cmd": counted(tid, f"setsid sleep {secs} & " + (f"sleep {secs}" if tid.startswith("quick")
                                                                else shell_wait_for(folder / "finish")),
                             counter, started),
              "reads": [str(gate)]}
        for tid, secs in CRASH_TASKS.items()}
    tasks["after"] = {"cmd": counted("after", "true", counter, started), "depends_on": ["slow1"]}
    if changed:
        tasks[changed]["cmd"] = str(tasks[changed]["cmd"]) + "; true"
    return write_tasks(folder, tasks)


@pytest.mark.parametrize("moment", ["before_any_task_started", "while_tasks_run", "after_some_finished"])
def test_a_killed_run_is_crashed_and_resume_finishes_it(tmp_path: Path, box: Sandbox, moment: str) -> None:
    folder, counter, started, gate = tmp_path / "work", tmp_path / "counts", tmp_path / "started", \
        tmp_path / "gate"
    folder.mkdir()
    started.mkdir()
    tasks = crash_tasks_file(folder, counter, started, gate)
    holder = None
    if moment == "before_any_task_started":  # every task reads the gate: they wait for its writer
        holder = hold_for_writing(tmp_path, box, gate)
    run, run_id = start_run(box, tasks, folder)

    if moment == "before_any_task_started":
        run.wait_event(lambda e: e.get("state") == "waiting", "a task waiting for the gate")
    elif moment == "while_tasks_run":
        wait_until(lambda: all((started / t).exists() for t in CRASH_TASKS), "every task to start")
    else:
        wait_recorded(box, run_id, {"quick1", "quick2"})
    status = kill_and_check_crashed(box, run, run_id)
    done_before = {t for t, s in task_states(status).items() if s == "done"}
    before = counts(counter)
    if holder is not None:
        assert done_before == set() and before == Counter()
        (tmp_path / "release").touch()
        assert holder.finish().code == 0, holder
    if moment == "after_some_finished":
        assert {"quick1", "quick2"} <= done_before and "slow1" not in done_before

    finish_slow_tasks(folder)
    resumed = box.cli("resume", run_id, "--json", cwd=folder)

    assert resumed.code == 0, resumed
    after = counts(counter)
    for tid in [*CRASH_TASKS, "after"]:
        if tid in done_before:
            assert after[tid] == 1, (tid, after)  # kept, not run again
        else:
            assert after[tid] == before[tid] + 1, (tid, before, after)  # none lost
    kept = {e["task"] for e in resumed.events if e["event"] == "task_state" and e.get("kept")}
    assert kept == done_before
    final = box.status(run_id)
    assert final["status"] == "done" and final["exit_code"] == 0, final
    assert set(task_states(final).values()) == {"done"}


def test_a_task_whose_definition_changed_runs_again_on_resume(tmp_path: Path, box: Sandbox) -> None:
    folder, counter, started, gate = tmp_path / "work", tmp_path / "counts", tmp_path / "started", \
        tmp_path / "gate"
    folder.mkdir()
    started.mkdir()
    tasks = crash_tasks_file(folder, counter, started, gate)
    run, run_id = start_run(box, tasks, folder)
    wait_recorded(box, run_id, {"quick1", "quick2"})
    status = kill_and_check_crashed(box, run, run_id)
    assert {"quick1", "quick2"} <= {t for t, s in task_states(status).items() if s == "done"}

    crash_tasks_file(folder, counter, started, gate, changed="quick1")
    finish_slow_tasks(folder)
    resumed = box.cli("resume", run_id, "--json", cwd=folder)

    assert resumed.code == 0, resumed
    after = counts(counter)
    assert after["quick1"] == 2  # its definition changed: run again
    assert after["quick2"] == 1  # unchanged: kept
    assert all(after[t] >= 1 for t in [*CRASH_TASKS, "after"])


def crash_and_resume_a_worktree_run(tmp_path: Path,
                                    box: Sandbox) -> tuple[Path, Ran, dict[str, str], Counter[str]]:
    """A worktree run killed once a and b are recorded (c still runs), then resumed: the
    repository, the resume, the commits recorded before the crash, and how often each task ran."""
    counter, started = tmp_path / "counts", tmp_path / "started"
    started.mkdir()
    until_finish = shell_wait_for(tmp_path / "finish")  # c runs until the kill is done
    tasks = tasks_toml({
        "a": {"cmd": counted("a", "echo a > a.txt", counter, started), "writes": ["a.txt"]},
        "b": {"cmd": counted("b", "echo b > b.txt", counter, started), "writes": ["b.txt"]},
        "c": {"cmd": counted("c", f"{until_finish}; echo c > c.txt", counter, started), "writes": ["c.txt"]},
        "d": {"cmd": counted("d", "cat a.txt > d.txt", counter, started), "writes": ["d.txt"],
              "depends_on": ["a", "c"]},
    })
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})
    run, run_id = start_run(box, repo / "tasks.toml", repo)
    wait_recorded(box, run_id, {"a", "b"})
    status = kill_and_check_crashed(box, run, run_id)
    commits = {t["id"]: t["commit"] for t in status["tasks"] if t["state"] == "done"}
    assert {"a", "b"} <= set(commits) and "c" not in commits
    finish_slow_tasks(tmp_path)
    resumed = box.cli("resume", run_id, "--json", cwd=repo)
    return repo, resumed, commits, counts(counter)


def test_resume_of_a_crashed_worktree_run_keeps_the_earlier_commits(tmp_path: Path, box: Sandbox) -> None:
    repo, resumed, commits, after = crash_and_resume_a_worktree_run(tmp_path, box)

    assert resumed.code == 0, resumed
    for tid, commit in commits.items():
        assert commit and is_ancestor(repo, commit, "main"), tid  # the very same results
    for tid in ("a", "b", "c"):
        assert show(repo, "main", f"{tid}.txt") == f"{tid}\n"
    assert show(repo, "main", "d.txt") == "a\n"
    assert after["a"] == 1 and after["b"] == 1 and after["c"] >= 1 and after["d"] == 1
    assert_clean(repo)
    assert_no_leftovers(repo, box)  # the crashed supervisor's worktrees too


# ------------------------------------------------------------------------------- background runs

def background_tasks(folder: Path, go: Path, *, failing: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tasks = {
        "hello": {"cmd": f"echo hello-from-the-task; {shell_wait_for(go)}; echo bye"},
        "other": {"cmd": f"{shell_wait_for(go)}; " + ("exit 5" if failing else "true")},
    }
    return write_tasks(folder, tasks)


def test_a_background_run_returns_at_once_and_status_logs_and_wait_follow_it(
        tmp_path: Path, box: Sandbox) -> None:
    go = tmp_path / "go"
    tasks = background_tasks(tmp_path / "work", go)

    began = time.monotonic()
    launched = box.cli("run", "--background", tasks, cwd=tasks.parent)
    took = time.monotonic() - began

    assert launched.code == 0, launched
    run_id = launched.out.strip()
    assert launched.out == run_id + "\n" and RUN_ID.fullmatch(run_id), launched  # only the id
    assert took < 5, took  # its tasks cannot end before `go` exists: it did not wait for them
    assert not go.exists()
    supervisor = box.status(run_id)["pid"]
    assert os.getsid(supervisor) == supervisor != os.getsid(0)  # detached: a session of its own
    listed = box.cli("status")
    assert run_id in listed.out and "running" in listed.out, listed
    listed_json = json.loads(box.cli("status", "--json").out)
    assert [r["status"] for r in listed_json if r["id"] == run_id] == ["running"]
    wait_until(lambda: "hello-from-the-task" in box.cli("logs", run_id, "hello").out, "the task's output",
               every=CLI_POLL)

    follower = box.spawn("logs", run_id, "hello", "--follow")
    go.touch()
    waited = box.cli("wait", run_id)

    assert waited.code == 0, waited
    followed = follower.finish(timeout=10)  # --follow ends with the run
    assert followed.code == 0 and followed.out.splitlines() == ["hello-from-the-task", "bye"], followed
    logs = box.cli("logs", run_id, "hello")
    assert logs.code == 0 and logs.out.splitlines() == ["hello-from-the-task", "bye"], logs
    every = box.cli("logs", run_id)
    assert "==> hello <==" in every.out and "hello-from-the-task" in every.out, every
    assert box.status(run_id)["status"] == "done"


def test_wait_gives_1_for_a_background_run_with_a_failing_task(tmp_path: Path, box: Sandbox) -> None:
    go = tmp_path / "go"
    go.touch()
    tasks = background_tasks(tmp_path / "work", go, failing=True)

    launched = box.cli("run", "--background", tasks, cwd=tasks.parent)
    run_id = launched.out.strip()
    waited = box.cli("wait", run_id)

    assert launched.code == 0, launched
    assert waited.code == 1, waited
    status = box.status(run_id)
    assert status["status"] == "failed" and task_states(status)["other"] == "failed", status


def test_cancel_leaves_no_task_process_alive(tmp_path: Path, box: Sandbox) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    marker = f"nova-e2e-cancel-{tmp_path.name}"
    write_tasks(folder, {
        "plain": {"cmd": f"sleep 30; echo {marker}"},
        # a descendant in its own session, and one that ignores SIGTERM
        "escaper": {"cmd": f"setsid sh -c 'sleep 30; echo {marker}' & trap '' TERM; sleep 30; wait"},
        "queued": {"cmd": "true", "depends_on": ["plain"]},
    })
    launched = box.cli("run", "--background", folder / "tasks.toml", cwd=folder)
    run_id = launched.out.strip()
    wait_recorded(box, run_id, {"plain", "escaper"}, "running")
    wait_until(lambda: len(task_processes(run_id)) >= 4, "the task processes to appear")

    cancelled = box.cli("cancel", run_id)

    assert cancelled.code == 0, cancelled
    alive = [p.cmdline() for p in task_processes(run_id)]
    assert alive == [], alive
    status = box.status(run_id)
    assert status["status"] == "cancelled", status
    assert task_states(status)["queued"] in ("cancelled", "skipped")
    assert "cancelled" in box.cli("status", run_id).out
    assert box.cli("wait", run_id).code == 143


def test_a_cancelled_worktree_run_keeps_its_branches_and_resume_lands_everything(
        tmp_path: Path, box: Sandbox) -> None:
    counter, started, go = tmp_path / "counts", tmp_path / "started", tmp_path / "go"
    started.mkdir()
    tasks = {t: {"cmd": counted(t, f"echo {t} > {t}.txt", counter, started), "writes": [f"{t}.txt"]}
             for t in ("a", "b")}
    tasks["c"] = {"cmd": counted("c", f"{shell_wait_for(go)}; echo c > c.txt", counter, started),
                  "writes": ["c.txt"]}
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks_toml(tasks)})
    base = rev(repo, "main")
    run_id = box.cli("run", "--background", repo / "tasks.toml", cwd=repo).out.strip()
    wait_recorded(box, run_id, {"a", "b"})

    cancelled = box.cli("cancel", run_id)

    assert cancelled.code == 0, cancelled
    assert box.status(run_id)["status"] == "cancelled"
    assert rev(repo, "main") == base  # an interrupted run merges nothing
    assert {f"nova/{run_id}/a", f"nova/{run_id}/b"} <= set(nova_branches(repo))
    assert show(repo, f"nova/{run_id}/a", "a.txt") == "a\n"

    go.touch()
    resumed = box.cli("resume", run_id, "--json", cwd=repo)

    assert resumed.code == 0, resumed
    for tid in ("a", "b", "c"):
        assert show(repo, "main", f"{tid}.txt") == f"{tid}\n"
    assert counts(counter) == Counter({"a": 1, "b": 1, "c": 1})
    assert_clean(repo)
    assert_no_leftovers(repo, box)


def test_resume_of_a_failed_run_reports_the_kept_tasks_as_status_does(tmp_path: Path, box: Sandbox) -> None:
    folder, fixed = tmp_path / "work", tmp_path / "fixed"
    folder.mkdir()
    write_tasks(folder, {
        "fine": {"cmd": "true"},
        "flaky": {"cmd": f"test -e {fixed}"},
    })
    failed = box.run(folder / "tasks.toml")
    assert failed.code == 1, failed
    fixed.touch()

    resumed = box.cli("resume", failed.run_id, "--json", cwd=folder)

    assert resumed.code == 0, resumed
    status = {t["id"]: t for t in box.status(failed.run_id)["tasks"]}
    assert status["fine"]["attempts"] == 1 and status["flaky"]["attempts"] == 2, status
    summary = resumed.summary["tasks"]
    assert {t: summary[t]["attempts"] for t in summary} == {"fine": 1, "flaky": 2}, summary


# ------------------------------------------------------------------------------- history

def test_the_durations_of_a_run_feed_the_next_plan(tmp_path: Path, box: Sandbox) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    write_tasks(folder, {
        "long": {"cmd": "sleep 1.2"},
        "short": {"cmd": "true"},
    })

    def estimates() -> dict[str, float]:
        ran = box.cli("plan", folder / "tasks.toml", "--json", cwd=folder)
        assert ran.code == 0, ran
        return {t["id"]: t["estimated_duration"] for t in json.loads(ran.out)["tasks"]}

    before = estimates()
    ran = box.run(folder / "tasks.toml")
    after = estimates()

    assert ran.code == 0, ran
    assert before["long"] == before["short"]  # nothing known yet
    assert 1.0 <= after["long"] <= 3.0, after
    assert after["short"] < 0.5, after


def test_only_tasks_that_printed_keep_a_log(tmp_path: Path, box: Sandbox) -> None:
    work = tmp_path / "work"
    work.mkdir()
    tasks = write_tasks(work, tasks_toml({"loud": {"cmd": "echo hello"}, "quiet": {"cmd": "true"},
                                          "quiet_fail": {"cmd": "exit 3"}}, isolation="none"))

    ran = box.run(tasks)

    assert ran.code == 1, ran
    logs = next((box.state / "runs").iterdir()) / "logs"
    assert sorted(p.name for p in logs.iterdir()) == ["loud.log"]
    run_id = logs.parent.name
    assert box.cli("logs", run_id, "loud").out == "hello\n"
    quiet = box.cli("logs", run_id, "quiet")
    assert quiet.code == 0 and quiet.out == "" and "no output" in quiet.err


def test_a_run_id_works_from_any_folder(tmp_path: Path, box: Sandbox) -> None:
    from support.cli import run_cli

    env = {k: v for k, v in box.env.items() if k != "NOVA_STATE_DIR"} | {
        "XDG_STATE_HOME": str(tmp_path / "xdg")}
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    elsewhere.mkdir()
    tasks = write_tasks(work, tasks_toml({"loud": {"cmd": "echo from-loud"}, "bad": {"cmd": "exit 5"}},
                                         isolation="none"))
    run_id = run_cli("run", "--background", tasks, cwd=work, env=env).stdout.strip()

    def there(*args: str) -> Any:
        return run_cli(*args, cwd=elsewhere, env=env)

    assert there("wait", run_id).returncode == 1
    assert json.loads(there("status", run_id, "--json").stdout)["id"] == run_id
    assert there("logs", run_id, "loud").stdout == "from-loud\n"
    listed = there("status", "--all").stdout
    assert run_id in listed and "tasks.toml" in listed
    assert run_id not in there("status").stdout  # the runs of this folder: none
    tasks.write_text(tasks_toml({"loud": {"cmd": "echo from-loud"}, "bad": {"cmd": "true"}},
                                isolation="none"))
    resumed = there("resume", run_id)
    assert resumed.returncode == 0, resumed.stderr


def test_logs_follow_of_one_task_ends_when_that_task_does(tmp_path: Path, box: Sandbox) -> None:
    go, release = tmp_path / "go", tmp_path / "release"
    tasks = write_tasks(tmp_path / "work", {
        "quick": {"cmd": f"echo first; {shell_wait_for(go)}; echo last"},
        "long": {"cmd": shell_wait_for(release)},
    })
    run_id = box.cli("run", "--background", tasks, cwd=tasks.parent).out.strip()
    follower = box.spawn("logs", run_id, "quick", "--follow")
    try:
        go.touch()
        followed = follower.finish(timeout=20)  # while `long` still runs
        assert followed.code == 0 and followed.out.splitlines() == ["first", "last"], followed
        assert box.status(run_id)["status"] == "running"
    finally:
        release.touch()
    assert box.cli("wait", run_id).code == 0
