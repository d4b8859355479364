"""End to end: `novaproc run` in real git repositories, with worktree isolation (the default
inside git). Each test makes its own repository in tmp_path and gives the CLI private state,
worktree and lock folders, so tests running in parallel never share anything.

The harness (Sandbox, make_repo, git, tasks_toml, ...) lives in tests/support/.
"""

from __future__ import annotations

import itertools
import json
import re
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.repo import (
    commit_all,
    git,
    is_ancestor,
    make_repo,
    nova_branches,
    rev,
    show,
    worktree_paths,
    write_files,
)
from support.sandbox import Sandbox, assert_clean, assert_no_leftovers
from support.tasks import tasks_toml, write_tasks
from support.waiting import shell_wait_for, wait_for_file


def simple_task(tid: str, text: str | None = None, **fields: object) -> dict[str, object]:
    """A task writing `text` (default: its id) to <tid>.txt, declaring that file."""
    return {"cmd": f"echo {text or tid} > {tid}.txt", "writes": [f"{tid}.txt"], **fields}


# ------------------------------------------------------------------------------- merging

def test_three_tasks_on_different_files_merge_into_a_clean_target(tmp_path: Path, box: Sandbox) -> None:
    tasks = tasks_toml({t: simple_task(t) for t in ("a", "b", "c")})
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks, "README": "hello\n"})
    base = rev(repo, "main")

    ran = box.run(repo / "tasks.toml")

    assert ran.code == 0, ran
    assert ran.states() == {"a": "done", "b": "done", "c": "done"}
    for t in ("a", "b", "c"):
        assert show(repo, "main", f"{t}.txt") == f"{t}\n"
        assert (repo / f"{t}.txt").read_text() == f"{t}\n"  # the checkout moved with the branch
    assert is_ancestor(repo, base, "main")
    assert {e["run_id"] for e in ran.events} == {ran.run_id}  # every event names its run
    assert stat.S_IMODE(box.worktrees.stat().st_mode) == 0o700
    assert_clean(repo)
    assert_no_leftovers(repo, box)


def test_a_dependent_sees_its_dependencys_change(tmp_path: Path, box: Sandbox) -> None:
    tasks = tasks_toml({
        "make": {"cmd": "sleep 0.2; echo made > made.txt", "writes": ["made.txt"]},
        "use": {"cmd": "cat made.txt > used.txt", "writes": ["used.txt"], "depends_on": ["make"]},
        "other": simple_task("other"),
    })
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})

    ran = box.run(repo / "tasks.toml")

    assert ran.code == 0, ran
    assert show(repo, "main", "used.txt") == "made\n"
    assert show(repo, "main", "made.txt") == "made\n"
    assert show(repo, "main", "other.txt") == "other\n"
    assert_clean(repo)
    assert_no_leftovers(repo, box)


def test_tasks_declaring_the_same_writes_run_in_declared_order_on_each_others_results(
        tmp_path: Path, box: Sandbox) -> None:
    # the first is the slowest: run at once, the others would not see its line
    tasks = tasks_toml({
        "first": {"cmd": "sleep 0.3; echo first >> log.txt", "writes": ["log.txt"]},
        "second": {"cmd": "cp log.txt seen-by-second.txt; echo second >> log.txt",
                   "writes": ["log.txt", "seen-by-second.txt"]},
        "third": {"cmd": "cp log.txt seen-by-third.txt; echo third >> log.txt",
                  "writes": ["log.txt", "seen-by-third.txt"]},
    })
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks, "log.txt": "base\n"})

    ran = box.run(repo / "tasks.toml")

    assert ran.code == 0, ran
    assert show(repo, "main", "log.txt") == "base\nfirst\nsecond\nthird\n"
    assert show(repo, "main", "seen-by-second.txt") == "base\nfirst\n"
    assert show(repo, "main", "seen-by-third.txt") == "base\nfirst\nsecond\n"
    assert ran.event("merge")["reruns"] == []  # ordered, so nothing conflicted
    assert_clean(repo)
    assert_no_leftovers(repo, box)


def test_undeclared_conflicting_edits_are_run_again_and_both_kept(tmp_path: Path, box: Sandbox) -> None:
    tasks = tasks_toml({
        "one": {"cmd": "echo one >> shared.txt"},
        "two": {"cmd": "sleep 0.1; echo two >> shared.txt"},
    })
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks, "shared.txt": "base\n"})

    ran = box.run(repo / "tasks.toml")

    assert ran.code == 0, ran
    assert show(repo, "main", "shared.txt") == "base\none\ntwo\n"
    assert ran.event("merge")["reruns"] == ["two"]
    assert_clean(repo)
    assert_no_leftovers(repo, box)


def test_a_task_that_changes_nothing_when_run_again_is_no_conflict(tmp_path: Path, box: Sandbox) -> None:
    """Run one by one, `two` would find LEVEL = 2 and change nothing: so does its run again."""
    tasks = tasks_toml({
        "one": {"cmd": "sed -i 's/^LEVEL = 1$/LEVEL = 2/' config.py"},
        "two": {"cmd": "sleep 0.1; sed -i 's/^LEVEL = 1$/LEVEL = 3/' config.py"},
    })
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks, "config.py": "LEVEL = 1\n"})

    ran = box.run(repo / "tasks.toml")

    assert ran.code == 0, ran
    assert show(repo, "main", "config.py") == "LEVEL = 2\n"
    assert ran.event("merge")["reruns"] == ["two"]
    assert "changed nothing more" in ran.notes
    assert_clean(repo)
    assert_no_leftovers(repo, box)


def test_the_progress_count_stays_within_the_total_when_a_task_runs_again(
        tmp_path: Path, box: Sandbox) -> None:
    tasks = tasks_toml({
        "one": {"cmd": "echo one >> shared.txt"},
        "two": {"cmd": "echo two >> shared.txt"},
    })
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks, "shared.txt": "base\n"})

    ran = box.cli("run", repo / "tasks.toml", cwd=repo)  # the plain view

    assert ran.code == 0, ran
    assert "novaproc: two: re-run on the merged result: running" in ran.out, ran  # named so
    assert re.search(r"^novaproc: two: re-run on the merged result: done$", ran.out, re.MULTILINE)
    counts = [tuple(map(int, m)) for m in re.findall(r"^\[(\d+)/(\d+)\]", ran.out, re.MULTILINE)]
    assert counts and all(done <= total for done, total in counts), ran.out
    rerun_at = ran.out.index("re-run on the merged result")  # no counter reads 2/2 "running" then
    assert not re.search(r"^\[\d+/\d+\] running", ran.out[rerun_at:], re.MULTILINE), ran.out


def test_on_conflict_fail_keeps_the_branch_and_names_the_file(tmp_path: Path, box: Sandbox) -> None:
    tasks = tasks_toml({
        "one": {"cmd": "echo one >> shared.txt"},
        "two": {"cmd": "echo two >> shared.txt"},
        "three": simple_task("three"),
    }, on_conflict="fail")
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks, "shared.txt": "base\n"})

    ran = box.cli("run", repo / "tasks.toml", cwd=repo)  # the plain view: what a person reads

    assert ran.code == 3, ran
    run_id = ran.run_id
    assert "shared.txt" in ran.text
    assert f"nova/{run_id}/two" in ran.text
    assert f"nova/{run_id}/two" in nova_branches(repo)
    assert show(repo, f"nova/{run_id}/two", "shared.txt") == "base\ntwo\n"
    assert show(repo, "main", "shared.txt") == "base\none\n"  # the others merged
    assert show(repo, "main", "three.txt") == "three\n"
    assert_clean(repo)


def test_verify_failing_because_of_one_task_names_it_and_lands_the_rest(tmp_path: Path, box: Sandbox) -> None:
    tasks = tasks_toml({
        "good1": simple_task("good1"),
        "breaker": {"cmd": "echo oops > broken.txt", "writes": ["broken.txt"]},
        "good2": simple_task("good2"),
    }, verify="test ! -e broken.txt")
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})

    ran = box.run(repo / "tasks.toml")

    assert ran.code == 4, ran
    assert ran.event("merge")["culprit"] == "breaker"
    assert "breaker" in ran.notes
    assert show(repo, "main", "good1.txt") == "good1\n"
    assert show(repo, "main", "good2.txt") == "good2\n"
    assert show(repo, "main", "broken.txt") is None
    assert not (repo / "broken.txt").exists()
    assert_clean(repo)
    assert worktree_paths(repo) == [repo.resolve()]  # verify's worktree is gone too


def test_a_target_moved_during_the_run_keeps_that_commit_and_the_results(
        tmp_path: Path, box: Sandbox) -> None:
    started, go = tmp_path / "started", tmp_path / "go"
    tasks = tasks_toml({
        "slow": {"cmd": f"touch {started}; {shell_wait_for(go)}; echo slow > slow.txt",
                 "writes": ["slow.txt"]},
        "quick": simple_task("quick"),
    })
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})
    run = box.spawn("run", repo / "tasks.toml", "--json", cwd=repo)
    wait_for_file(started)

    write_files(repo, {"theirs.txt": "theirs\n"})
    theirs = commit_all(repo, "somebody else's commit")
    go.touch()
    ran = run.finish()

    assert ran.code == 0, ran
    assert is_ancestor(repo, theirs, "main")
    assert show(repo, "main", "theirs.txt") == "theirs\n"
    assert show(repo, "main", "slow.txt") == "slow\n"
    assert show(repo, "main", "quick.txt") == "quick\n"
    assert (repo / "slow.txt").read_text() == "slow\n"
    assert_clean(repo)
    assert_no_leftovers(repo, box)


@pytest.mark.parametrize("on_conflict", ["rerun", "fail"])
def test_a_target_moved_by_a_conflicting_commit(tmp_path: Path, box: Sandbox, on_conflict: str) -> None:
    started, go = tmp_path / "started", tmp_path / "go"
    tasks = tasks_toml({"slow": {"cmd": f"touch {started}; {shell_wait_for(go)}; echo task >> f.txt",
                                 "writes": ["f.txt"]}}, on_conflict=on_conflict)
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks, "f.txt": "base\n"})
    run = box.spawn("run", repo / "tasks.toml", "--json", cwd=repo)
    wait_for_file(started)

    write_files(repo, {"f.txt": "base\nuser\n"})
    theirs = commit_all(repo, "somebody else's edit of f.txt")
    go.touch()
    ran = run.finish()

    assert is_ancestor(repo, theirs, "main")
    assert_clean(repo)
    if on_conflict == "rerun":  # run again on top of the new tip
        assert ran.code == 0, ran
        assert show(repo, "main", "f.txt") == "base\nuser\ntask\n"
        assert_no_leftovers(repo, box)
    else:
        assert ran.code == 3, ran
        assert show(repo, "main", "f.txt") == "base\nuser\n"
        assert show(repo, f"nova/{ran.run_id}/slow", "f.txt") == "base\ntask\n"
        assert "f.txt" in ran.notes


def test_the_repository_is_the_one_holding_the_tasks_file_wherever_the_command_starts(
        tmp_path: Path, box: Sandbox) -> None:
    tasks = tasks_toml({"a": simple_task("a")})
    repo = make_repo(tmp_path / "repo", {"jobs/tasks.toml": tasks})
    elsewhere = make_repo(tmp_path / "elsewhere", {"README": "another repository\n"})
    before = rev(elsewhere, "main")

    ran = box.cli("run", repo / "jobs" / "tasks.toml", cwd=elsewhere)

    assert ran.code == 0, ran
    assert show(repo, "main", "a.txt") == "a\n"  # paths are relative to the repository root
    assert rev(elsewhere, "main") == before
    assert_clean(repo)
    assert_clean(elsewhere)
    assert_no_leftovers(repo, box)


def test_two_runs_in_one_repository_both_land(tmp_path: Path, box: Sandbox) -> None:
    files = {f"{name}.toml": tasks_toml({f"{name}{i}": simple_task(f"{name}{i}") for i in range(3)})
             for name in ("x", "y")}
    repo = make_repo(tmp_path / "repo", files)

    runs = [box.spawn("run", repo / f"{name}.toml", cwd=repo) for name in ("x", "y")]
    ran = [run.finish() for run in runs]

    assert [r.code for r in ran] == [0, 0], ran
    for name in ("x", "y"):
        for i in range(3):
            assert show(repo, "main", f"{name}{i}.txt") == f"{name}{i}\n"
    assert_clean(repo)
    assert_no_leftovers(repo, box)


def test_own_commits_and_deletions_land_on_a_target_that_is_not_checked_out(
        tmp_path: Path, box: Sandbox) -> None:
    tasks = tasks_toml({
        "own": {"cmd": "echo x > x.txt && git add x.txt && git commit -qm 'made by the task' "
                       "&& echo y > y.txt", "writes": ["x.txt", "y.txt"]},
        "delete": {"cmd": "rm gone.txt", "writes": ["gone.txt"]},
    }, target="dev")
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks, "gone.txt": "bye\n"})
    git(repo, "branch", "dev")
    main = rev(repo, "main")

    ran = box.run(repo / "tasks.toml")

    assert ran.code == 0, ran
    assert "made by the task" in git(repo, "log", "--format=%s", "dev").splitlines()
    assert sorted(git(repo, "ls-tree", "--name-only", "dev").split()) == ["tasks.toml", "x.txt", "y.txt"]
    assert rev(repo, "main") == main  # the checked-out branch is not the target: untouched
    assert (repo / "gone.txt").exists()
    assert_clean(repo)
    assert_no_leftovers(repo, box)


def test_included_files_and_the_setup_reach_every_task_without_being_committed(
        tmp_path: Path, box: Sandbox) -> None:
    tasks = tasks_toml({t: {"cmd": f"cat .env .setup-done > {t}.txt", "writes": [f"{t}.txt"]} for t in "ab"},
                       worktree_include=[".env"], worktree_setup="echo ready > .setup-done")
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks, ".gitignore": ".env\n.setup-done\n"})
    (repo / ".env").write_text("SECRET=1\n")

    ran = box.run(repo / "tasks.toml")

    assert ran.code == 0, ran
    for t in "ab":
        assert show(repo, "main", f"{t}.txt") == "SECRET=1\nready\n"
    assert sorted(git(repo, "ls-tree", "--name-only", "main").split()) == [".gitignore", "a.txt", "b.txt",
                                                                          "tasks.toml"]
    assert not (repo / ".setup-done").exists()
    assert_no_leftovers(repo, box)


def test_a_failing_setup_fails_its_task_and_the_run_ends(tmp_path: Path, box: Sandbox) -> None:
    """The last task failing before it starts (its worktree_setup) must still end the run."""
    tasks = tasks_toml({"a": {"cmd": "echo a > a.txt", "writes": ["a.txt"]}},
                       worktree_setup="echo no; exit 3")
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})

    ran = box.run(repo / "tasks.toml", timeout=30)

    assert ran.code == 1, ran
    assert "worktree_setup 'echo no; exit 3' failed" in ran.text and "(exit 3): no" in ran.text


def test_files_made_by_the_setup_are_not_part_of_a_tasks_result(tmp_path: Path, box: Sandbox) -> None:
    tasks = tasks_toml({"a": simple_task("a")}, worktree_setup="echo generated > setup-output.txt")
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})

    ran = box.run(repo / "tasks.toml")

    assert ran.code == 0, ran
    assert show(repo, "main", "a.txt") == "a\n"
    assert "outside its writes" not in ran.text
    assert show(repo, "main", "setup-output.txt") is None


# ------------------------------------------------------------------------------- the user's checkout

@pytest.mark.parametrize("change", ["modified", "untracked"])
def test_a_dirty_checkout_in_the_way_is_never_overwritten(tmp_path: Path, box: Sandbox, change: str) -> None:
    tasks = tasks_toml({"edit": {"cmd": "echo from-task > f.txt", "writes": ["f.txt"]}})
    files = {"tasks.toml": tasks, **({"f.txt": "original\n"} if change == "modified" else {})}
    repo = make_repo(tmp_path / "repo", files)
    base = rev(repo, "main")
    (repo / "f.txt").write_text("my uncommitted work\n")

    ran = box.cli("run", repo / "tasks.toml", cwd=repo)

    assert ran.code == 3, ran
    assert (repo / "f.txt").read_text() == "my uncommitted work\n"
    waiting = f"nova/{ran.run_id}/merged"
    assert waiting in ran.text
    assert show(repo, waiting, "f.txt") == "from-task\n"
    assert rev(repo, "main") == base
    assert git(repo, "status", "--porcelain", strip=False) == (" M f.txt\n" if change == "modified"
                                                               else "?? f.txt\n")


def test_uncommitted_changes_elsewhere_survive_a_merge(tmp_path: Path, box: Sandbox) -> None:
    tasks = tasks_toml({"edit": {"cmd": "echo from-task > f.txt", "writes": ["f.txt"]}})
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks, "f.txt": "original\n", "g.txt": "g\n",
                                         "h.txt": "h\n"})
    (repo / "g.txt").write_text("my uncommitted work\n")
    (repo / "h.txt").write_text("staged work\n")
    git(repo, "add", "h.txt")
    (repo / "notes.txt").write_text("untracked\n")

    ran = box.run(repo / "tasks.toml")

    assert ran.code == 0, ran
    assert show(repo, "main", "f.txt") == "from-task\n"
    assert (repo / "f.txt").read_text() == "from-task\n"
    assert (repo / "g.txt").read_text() == "my uncommitted work\n"
    assert (repo / "notes.txt").read_text() == "untracked\n"
    assert show(repo, "main", "g.txt") == "g\n"
    assert show(repo, "main", "h.txt") == "h\n"
    assert any(e["event"] == "message" and "uncommitted" in e["text"] for e in ran.events), ran
    status = git(repo, "status", "--porcelain", strip=False)
    assert sorted(status.splitlines()) == [" M g.txt", "?? notes.txt", "M  h.txt"]


def test_the_plan_of_a_dirty_checkout_says_uncommitted_changes_are_not_in_the_base(
        tmp_path: Path, box: Sandbox) -> None:
    tasks = tasks_toml({"edit": {"cmd": "cat f.txt > g.txt", "writes": ["g.txt"]}})
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks, "f.txt": "committed\n"})
    (repo / "f.txt").write_text("uncommitted\n")

    plan = box.cli("plan", repo / "tasks.toml", cwd=repo)
    plan_json = box.cli("plan", repo / "tasks.toml", "--json", cwd=repo)

    assert plan.code == 0, plan
    assert "uncommitted" in plan.out, plan
    assert any("uncommitted" in w for w in json.loads(plan_json.out)["warnings"]), plan_json


def test_no_merge_leaves_the_target_alone_and_the_results_on_branches(tmp_path: Path, box: Sandbox) -> None:
    tasks = tasks_toml({t: simple_task(t) for t in ("a", "b")})
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})
    base = rev(repo, "main")

    ran = box.run(repo / "tasks.toml", "--no-merge")

    assert ran.code == 0, ran
    assert rev(repo, "main") == base
    assert not (repo / "a.txt").exists()
    run_id = ran.run_id
    assert sorted(nova_branches(repo)) == [f"nova/{run_id}/a", f"nova/{run_id}/b"]
    assert show(repo, f"nova/{run_id}/a", "a.txt") == "a\n"
    assert show(repo, f"nova/{run_id}/b", "b.txt") == "b\n"
    assert show(repo, f"nova/{run_id}/a", "b.txt") is None
    assert_clean(repo)
    assert worktree_paths(repo) == [repo.resolve()]


@pytest.mark.parametrize("policy", ["warn", "fail"])
def test_a_task_writing_outside_its_writes(tmp_path: Path, box: Sandbox, policy: str) -> None:
    tasks = tasks_toml({
        "sloppy": {"cmd": "echo a > a.txt; echo stray > stray.txt", "writes": ["a.txt"]},
        "tidy": simple_task("tidy"),
    }, undeclared_writes=policy)
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})

    ran = box.run(repo / "tasks.toml")

    assert "stray.txt" in ran.text
    if policy == "warn":
        assert ran.code == 0, ran
        assert show(repo, "main", "stray.txt") == "stray\n"
    else:
        assert ran.code == 1, ran
        assert ran.states()["sloppy"] == "failed"
        assert "stray.txt" in ran.summary["tasks"]["sloppy"]["error"]
        assert show(repo, "main", "stray.txt") is None
        assert show(repo, "main", "a.txt") is None
        assert ran.states()["tidy"] == "done"


def test_sixteen_tasks_in_worktrees_at_once_all_succeed(tmp_path: Path, box: Sandbox) -> None:
    ids = [f"t{i:02d}" for i in range(16)]
    tasks = tasks_toml({t: {"cmd": f"sleep 0.2; echo {t} > {t}.txt", "writes": [f"{t}.txt"]} for t in ids})
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})

    ran = box.run(repo / "tasks.toml", "-j", "16", timeout=90)

    assert ran.code == 0, ran
    assert set(ran.states().values()) == {"done"}
    tree = git(repo, "ls-tree", "--name-only", "main").split()
    assert sorted(t for t in tree if re.fullmatch(r"t\d\d\.txt", t)) == [f"{t}.txt" for t in ids]
    assert_clean(repo)
    assert_no_leftovers(repo, box)


# ------------------------------------------------------------------------------- kept for inspection

def test_a_failed_tasks_worktree_is_kept_and_listed_and_clean_removes_it(
        tmp_path: Path, box: Sandbox) -> None:
    tasks = tasks_toml({
        "ok": simple_task("ok"),
        "broken": {"cmd": "echo half-done > partial.txt; exit 3", "writes": ["partial.txt"]},
    })
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})

    ran = box.run(repo / "tasks.toml")

    assert ran.code == 1, ran
    kept = box.worktrees / f"{ran.run_id}-broken"
    assert str(kept) in ran.notes
    assert (kept / "partial.txt").read_text() == "half-done\n"
    assert kept.resolve() in worktree_paths(repo)

    cleaned = box.cli("clean", cwd=repo)

    assert cleaned.code == 0, cleaned
    assert str(kept) in cleaned.out
    assert not kept.exists()
    assert worktree_paths(repo) == [repo.resolve()]
    everything = box.cli("clean", "--all", cwd=repo)
    assert everything.code == 0, everything
    assert nova_branches(repo) == []
    assert show(repo, "main", "ok.txt") == "ok\n"


def test_clean_leaves_a_live_run_alone(tmp_path: Path, box: Sandbox) -> None:
    started, go = tmp_path / "started", tmp_path / "go"
    tasks = tasks_toml({"slow": {"cmd": f"touch {started}; {shell_wait_for(go)}; echo slow > slow.txt",
                                 "writes": ["slow.txt"]}})
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})
    run = box.spawn("run", repo / "tasks.toml", "--json", cwd=repo)
    run_id = run.wait_event(lambda e: e["event"] == "run_started", "the run to start")["run_id"]
    wait_for_file(started)

    cleaned = box.cli("clean", "--all", cwd=repo)

    assert cleaned.code == 0, cleaned
    assert f"left alone: live run(s) {run_id}" in cleaned.out, cleaned
    assert (box.worktrees / f"{run_id}-slow").is_dir()
    go.touch()
    ran = run.finish()
    assert ran.code == 0, ran
    assert show(repo, "main", "slow.txt") == "slow\n"
    assert_no_leftovers(repo, box)


def in_the_middle_of_a_merge(tmp_path: Path, tasks: str) -> Path:
    """A repository holding `tasks` whose merge of branch side into main stopped on a conflict."""
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks, "f.txt": "base\n"})
    git(repo, "checkout", "-q", "-b", "side")
    write_files(repo, {"f.txt": "side\n"})
    commit_all(repo, "side")
    git(repo, "checkout", "-q", "main")
    write_files(repo, {"f.txt": "main\n"})
    commit_all(repo, "main")
    git(repo, "merge", "-q", "side", check=False)  # conflicts: the merge stays in progress
    assert (repo / ".git" / "MERGE_HEAD").exists()
    return repo


def test_a_repository_in_the_middle_of_a_merge_is_refused(tmp_path: Path, box: Sandbox) -> None:
    marker = tmp_path / "ran"
    repo = in_the_middle_of_a_merge(tmp_path, tasks_toml({"t": {"cmd": f"touch {marker}"}}))

    ran = box.cli("run", repo / "tasks.toml", cwd=repo)

    assert ran.code == 2, ran  # nothing ran: the same answer as any input that cannot run
    assert "middle of a merge" in ran.err
    assert "Traceback" not in ran.text
    assert not marker.exists()
    assert (repo / ".git" / "MERGE_HEAD").exists()


def test_a_refused_run_leaves_no_crashed_run_behind(tmp_path: Path, box: Sandbox) -> None:
    repo = in_the_middle_of_a_merge(tmp_path, tasks_toml({"t": {"cmd": "true"}}))

    ran = box.cli("run", repo / "tasks.toml", cwd=repo)
    listed = box.cli("status", "--json")

    assert ran.code != 0, ran
    assert [r["status"] for r in json.loads(listed.out) if r["status"] == "crashed"] == [], listed


@pytest.mark.parametrize("asked", [None, "worktree"])
def test_outside_git_isolation_falls_back_to_none(tmp_path: Path, box: Sandbox, asked: str | None) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    extra = {"isolation": asked} if asked else {}
    write_tasks(folder, tasks_toml({"t": simple_task("t")}, **extra))

    plan = box.cli("plan", folder / "tasks.toml", cwd=folder)
    plan_json = box.cli("plan", folder / "tasks.toml", "--json", cwd=folder)
    ran = box.run(folder / "tasks.toml")

    assert plan.code == 0, plan
    assert "Isolation: none" in plan.out
    assert json.loads(plan_json.out)["isolation"] == "none"
    if asked:
        assert "git" in plan.out.split("Isolation: none", 1)[1]  # the warning says why
        assert any("git" in w for w in json.loads(plan_json.out)["warnings"])
    assert ran.code == 0, ran
    assert (folder / "t.txt").read_text() == "t\n"  # in place
    assert not box.worktrees.exists() or list(box.worktrees.iterdir()) == []


# ------------------------------------------------------------------------------- the property

FILES = ("f0.txt", "f1.txt", "f2.txt")
_examples = itertools.count()


@st.composite
def task_sets(draw: st.DrawFn) -> list[tuple[tuple[str, ...], bool, bool]]:
    """Tasks as (files it appends its line to, whether it sleeps, whether it depends on the one before)."""
    n = draw(st.integers(2, 5))
    return [(tuple(sorted(draw(st.sets(st.sampled_from(FILES), min_size=1, max_size=2)))),
             draw(st.booleans()), i > 0 and draw(st.booleans()))
            for i in range(n)]


def sequential_contents(tasks: Sequence[tuple[tuple[str, ...], bool, bool]]) -> dict[str, str]:
    """The files after running the tasks one by one in declared order."""
    contents = dict.fromkeys(FILES, "base\n")
    for i, (files, _, _) in enumerate(tasks):
        for f in files:
            contents[f] += f"t{i}\n"
    return contents


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tasks=task_sets())
def test_property_a_parallel_run_equals_running_the_tasks_one_by_one(
        tmp_path: Path, tasks: list[tuple[tuple[str, ...], bool, bool]]) -> None:
    example = tmp_path / f"example-{next(_examples)}"
    box = Sandbox(example)
    table = {}
    for i, (files, sleeps, after_previous) in enumerate(tasks):
        appends = " && ".join(f"echo t{i} >> {f}" for f in files)
        table[f"t{i}"] = {"cmd": ("sleep 0.1; " if sleeps else "") + appends, "writes": list(files),
                          **({"depends_on": [f"t{i - 1}"]} if after_previous else {})}
    repo = make_repo(example / "repo", {"tasks.toml": tasks_toml(table), **dict.fromkeys(FILES, "base\n")})

    ran = box.run(repo / "tasks.toml")

    assert ran.code == 0, ran
    expected = sequential_contents(tasks)
    assert {f: show(repo, "main", f) for f in FILES} == expected
    assert {f: (repo / f).read_text() for f in FILES} == expected
    assert_clean(repo)
    assert_no_leftovers(repo, box)


def test_many_tasks_editing_one_undeclared_file_are_summed_up_once(tmp_path: Path, box: Sandbox) -> None:
    tasks = tasks_toml({f"t{i}": {"cmd": f"echo {i} > own{i}.txt; echo x > shared.cfg",
                                  "writes": [f"own{i}.txt"]} for i in range(4)})
    repo = make_repo(tmp_path / "repo", {"tasks.toml": tasks})

    ran = box.cli("run", "-j", "2", repo / "tasks.toml", cwd=repo)

    assert ran.code == 0, ran
    assert ran.err.count("outside its writes") == 1  # the first task's warning, not one a task
    summed = [line for line in ran.out.splitlines() if "without declaring it" in line]
    assert len(summed) == 1 and "4 tasks changed shared.cfg" in summed[0]
    assert 'writes = ["shared.cfg"]' in summed[0]
