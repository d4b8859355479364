"""A run says what it does after its tasks: the merge, each verify run and bisection step, and
what landed where; status shows it after the fact, and `logs RUN verify|setup` their output."""

from __future__ import annotations

import json
import re
from pathlib import Path

from support.repo import make_repo
from support.sandbox import Sandbox
from support.tasks import tasks_toml

TASKS = tasks_toml({"good": {"cmd": "echo good > good.txt", "writes": ["good.txt"]},
                    "breaker": {"cmd": "echo oops > broken.txt", "writes": ["broken.txt"]},
                    "other": {"cmd": "echo other > other.txt", "writes": ["other.txt"]}},
                   verify="echo verifying; test ! -e broken.txt", worktree_setup="echo set up here")


def test_the_plain_view_says_each_phase_and_what_landed(tmp_path: Path, box: Sandbox) -> None:
    repo = make_repo(tmp_path / "repo", {"tasks.toml": TASKS})

    ran = box.cli("run", repo / "tasks.toml", cwd=repo)

    assert ran.code == 4, ran
    said = [line.removeprefix("novaproc: ") for line in ran.out.splitlines()
            if line.startswith("novaproc: ")]
    assert said[1] == "merging 3 result(s) into main"
    assert re.fullmatch(r"verify on the merged result \([0-9a-f]{12}\)", said[2])
    assert re.fullmatch(r"verify on the merged result: failed in \S+", said[3])
    assert any(s.startswith("bisect: verify with the first") for s in said)
    assert re.fullmatch(r"verify on the merged result: passed in \S+", said[-2])
    assert re.fullmatch(r"landed 2 result\(s\) on main at [0-9a-f]{12}, verified; 1 left out", said[-1])
    summary = ran.out.splitlines()
    assert any(line.startswith("landed 2 result(s) on main") for line in summary)
    assert re.search(r"; tasks \S+, landing \S+ \(verify \S+\)$", next(
        line for line in summary if line.startswith("wall ")))


def test_status_and_logs_tell_how_the_results_landed(tmp_path: Path, box: Sandbox) -> None:
    repo = make_repo(tmp_path / "repo", {"tasks.toml": TASKS})
    run_id = box.run(repo / "tasks.toml").run_id

    shown = box.cli("status", run_id).out
    assert re.search(r"landing: +landed 2 result\(s\) on main at [0-9a-f]{12}, verified", shown)
    assert "left out:   breaker: verify fails with its result" in shown
    assert re.search(r"landed: +(good, other|other, good)$", shown, re.MULTILINE)
    merge = json.loads(box.cli("status", run_id, "--json").out)["merge"]
    assert sorted(merge["merged"]) == ["good", "other"]
    assert (merge["culprit"], merge["verified"]) == ("breaker", True)
    assert box.cli("logs", run_id, "verify").out.count("verifying") >= 3  # merged, bisection, again
    assert "set up here" in box.cli("logs", run_id, "setup").out


def test_no_verify_lands_without_running_verify(tmp_path: Path, box: Sandbox) -> None:
    repo = make_repo(tmp_path / "repo", {"tasks.toml": TASKS})

    ran = box.cli("run", "--no-verify", repo / "tasks.toml", cwd=repo)

    assert ran.code == 0, ran
    assert "verify" not in ran.out
    assert "landed 3 result(s) on main" in ran.out and (repo / "broken.txt").exists()
