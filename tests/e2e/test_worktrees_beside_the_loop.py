"""End to end: worktrees are made, and results committed, beside the run loop, as many at once
as there are slots. Shown by what the tasks and the worktree_setup record: times written to
files outside the repository (ordering and overlap, with wide margins, never a wall time)."""

from __future__ import annotations

import signal
from pathlib import Path

from support.processes import assert_gone, marker
from support.repo import make_repo
from support.sandbox import Sandbox, assert_no_leftovers
from support.stamps import meeting_cmd, met
from support.tasks import tasks_toml
from support.waiting import wait_until

SETUP_SECONDS = 2.0


def stamping_setup(log: Path, seconds: float = SETUP_SECONDS) -> str:
    """A worktree_setup that writes when it starts and ends to `log`."""
    return (f'echo "start $(date +%s.%N)" >> "{log}"; sleep {seconds}; '
            f'echo "end $(date +%s.%N)" >> "{log}"')


def stamps(log: Path, kind: str) -> list[float]:
    return [float(line.split()[1]) for line in log.read_text().splitlines() if line.startswith(kind)]


def test_the_worktrees_of_a_slots_worth_of_tasks_are_set_up_at_once(tmp_path: Path, box: Sandbox) -> None:
    log = tmp_path / "setup.log"
    tasks = tasks_toml({t: {"cmd": f"echo {t} > {t}.txt", "writes": [f"{t}.txt"]} for t in "abc"},
                       worktree_setup=meeting_cmd(log, 3))
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})

    ran = box.run(repo / "tasks.toml", "-j", "3")

    assert ran.code == 0, ran
    assert met(log, 3), log.read_text()  # one after another, the first would end alone
    assert_no_leftovers(repo, box)


def test_tasks_run_in_place_start_and_end_while_a_worktree_is_set_up(tmp_path: Path, box: Sandbox) -> None:
    """Two slots: one held by a task whose worktree_setup takes a while, the other runs the four
    tasks in the checkout one after another meanwhile."""
    log, ran_at = tmp_path / "setup.log", tmp_path / "ran-at"
    quick = {f"q{i}": {"cmd": f'echo "$(date +%s.%N)" >> "{ran_at}"', "isolation": "none"} for i in range(4)}
    tasks = tasks_toml({"slow": {"cmd": "echo s > s.txt", "writes": ["s.txt"]}, **quick},
                       worktree_setup=stamping_setup(log))
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})

    ran = box.run(repo / "tasks.toml", "-j", "2")

    assert ran.code == 0, ran
    assert set(ran.states().values()) == {"done"}
    times = [float(line) for line in ran_at.read_text().split()]
    assert len(times) == 4
    assert max(times) < stamps(log, "end")[0], (times, log.read_text())


def test_a_task_whose_worktree_was_made_as_the_run_stopped_never_runs(tmp_path: Path, box: Sandbox) -> None:
    """fail_fast stops the run while another task's worktree is being set up: that task ends
    cancelled without running, and its worktree goes (nothing in it to inspect)."""
    ran_file = tmp_path / "late-ran"
    tasks = tasks_toml({"fails": {"cmd": "exit 1", "isolation": "none"},
                        "late": {"cmd": f'touch "{ran_file}"', "writes": ["x"]}},
                       worktree_setup="sleep 1.5", fail_fast=True)
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})

    ran = box.run(repo / "tasks.toml", "-j", "2")

    assert ran.code == 1, ran
    assert ran.states() == {"fails": "failed", "late": "cancelled"}
    assert ran.summary["tasks"]["late"]["error"] == "the run stopped before it started"
    assert not ran_file.exists()
    assert "kept for inspection" not in ran.text
    assert_no_leftovers(repo, box)


def test_ctrl_c_ends_the_worktree_setups_under_way(tmp_path: Path, box: Sandbox) -> None:
    tag, started = marker(), tmp_path / "started"
    setup = f'echo x >> "{started}"; sleep {tag}'
    tasks = tasks_toml({t: {"cmd": f"echo {t} > {t}.txt", "writes": [f"{t}.txt"]} for t in "ab"},
                       worktree_setup=setup)
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})
    live = box.spawn("run", repo / "tasks.toml", "--json", "-j", "2", cwd=repo)
    wait_until(lambda: started.exists() and len(started.read_text().split()) == 2, "both setups under way")

    live.proc.send_signal(signal.SIGINT)
    ran = live.finish(timeout=30)

    assert ran.code == 130, ran
    assert set(ran.states().values()) == {"cancelled"}, ran
    assert_gone(tag)
