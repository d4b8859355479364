"""End to end: the merge and the runs, hardened. Regression tests, each driving the real CLI on a
real repository with private state, worktree and lock folders (a Sandbox):

- a run always ends: a task failing as it starts (worktree_setup) frees the task that waited on
  it through an ordering edge (two tasks declaring one file);
- serial equivalence where a base is built: parents whose results conflict give their dependent
  the result of running them one by one, never a failure or a hang of another task;
- conflict_check = "file" (the default) runs again a result whose files were changed by one
  merged before it, even when git merges them cleanly (two identical appends); "line" trusts git;
- a SIGKILL during the final landing (before or after the target ref moved) is finished by
  resume: a clean checkout holding both results, a sound repository, also when the result deletes
  a file, and resume says what it found and did;
- resume after `clean --all` and a gc runs again a kept result whose commit is gone;
- a flaky verify blames nobody (verify_retries), and with verify_retries = 0 it does;
- every result left out is named, one building on the culprit's or on a conflicting result too;
- a target moved while verify ran: verified again and landed, or waiting with a note that names
  the real cause (the target moved and conflicts, or verify fails on it), not uncommitted changes.

The old code of a fix is tested by running this file with PYTHONPATH set to a checkout of the
commit before it (the CLI subprocesses inherit it).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.env import clean_env
from support.repo import git, git_run, make_repo, nova_branches, rev, show
from support.sandbox import Ran, Sandbox, assert_clean, assert_no_leftovers
from support.tasks import tasks_toml


def repo_with(tmp_path: Path, tasks: dict[str, dict[str, object]], files: dict[str, str] | None = None,
              **run: object) -> Path:
    """A repository whose first commit holds tasks.toml (`tasks`, [run] settings `run`) and `files`."""
    return make_repo(tmp_path / "repo", {"tasks.toml": tasks_toml(tasks, **run), **(files or {})})


def tree(repo: Path, ref: str = "main") -> dict[str, str]:
    """Every file of `ref` and its text."""
    paths = git(repo, "ls-tree", "-r", "--name-only", ref).splitlines()
    return {p: show(repo, ref, p) or "" for p in paths}


def one_by_one(repo: Path, base: str, cmds: list[str], into: Path) -> dict[str, str]:
    """The files of `base` after running `cmds` one by one in a plain clone (`into`): what a run
    of those tasks must leave."""
    git(repo.parent, "clone", "-q", str(repo), str(into))
    git(into, "checkout", "-q", "--detach", base)
    for cmd in cmds:
        subprocess.run(["/bin/sh", "-c", cmd], cwd=into, check=True)
    return {str(p.relative_to(into)): p.read_text() for p in sorted(into.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(into).parts}


def counter_cmd(path: Path, passes_from: int) -> str:
    """A shell command counting its runs in `path` (outside the repository), failing before its
    run number `passes_from` (1-based) and passing from it on."""
    return (f'n=$(cat "{path}" 2>/dev/null || echo 0); echo $((n+1)) > "{path}"; '
            f"test $n -ge {passes_from - 1}")


def runs_of(path: Path) -> int:
    """How often counter_cmd ran."""
    return int(path.read_text()) if path.exists() else 0


def lines_in(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


# ------------------------------------------------------------------------------- a run always ends

def test_a_task_failing_in_its_setup_frees_the_task_ordered_after_it(tmp_path: Path, box: Sandbox) -> None:
    """b waits on a only through an ordering edge (both write f.txt); a fails before it starts."""
    tasks = {t: {"cmd": "echo x >> f.txt", "writes": ["f.txt"]} for t in ("a", "b")}
    repo = repo_with(tmp_path, tasks, worktree_setup="exit 1")

    ran = box.run(repo / "tasks.toml", timeout=30)  # it waited for ever: the timeout fails the test

    assert ran.code == 1, ran
    assert ran.states() == {"a": "failed", "b": "failed"}
    assert "worktree_setup" in ran.text


# ------------------------------------------------------------------------------- serial equivalence

def test_parents_whose_results_conflict_give_their_dependent_the_one_by_one_result(
        tmp_path: Path, box: Sandbox) -> None:
    """a and b append to f.txt undeclared (their results conflict); c builds on both; d shares
    g.txt with c, so it waits for c: c must not fail, d must not hang."""
    tasks = {
        "a": {"cmd": "echo a >> f.txt"},
        "b": {"cmd": "echo b >> f.txt"},
        "c": {"cmd": "cat f.txt > g.txt", "writes": ["g.txt"], "depends_on": ["a", "b"]},
        "d": {"cmd": "echo d >> g.txt", "writes": ["g.txt"]},
    }
    repo = repo_with(tmp_path, tasks, {"f.txt": "base\n"})
    expected = one_by_one(repo, "main", [str(t["cmd"]) for t in tasks.values()], tmp_path / "serial")

    ran = box.run(repo / "tasks.toml", timeout=30)

    assert ran.code == 0, ran
    assert set(ran.states().values()) == {"done"}, ran
    assert expected["f.txt"] == "base\na\nb\n" and expected["g.txt"] == "base\na\nb\nd\n"
    assert tree(repo) == expected
    assert_clean(repo)
    assert_no_leftovers(repo, box)


SAME_APPENDS = {t: {"cmd": "echo same >> f.txt"} for t in ("one", "two")}  # undeclared


def test_identical_appends_are_run_again_one_by_one_with_conflict_check_file(
        tmp_path: Path, box: Sandbox) -> None:
    """git's merge of the two identical appends gives one line; one by one gives two."""
    repo = repo_with(tmp_path, SAME_APPENDS, {"f.txt": "base\n"})  # conflict_check = "file": the default

    ran = box.run(repo / "tasks.toml")

    assert ran.code == 0, ran
    assert show(repo, "main", "f.txt") == "base\nsame\nsame\n"
    assert ran.event("merge")["reruns"] == ["two"]
    assert "ran again" in ran.notes
    assert_clean(repo)
    assert_no_leftovers(repo, box)


def test_conflict_check_line_trusts_gits_merge_of_identical_appends(tmp_path: Path, box: Sandbox) -> None:
    repo = repo_with(tmp_path, SAME_APPENDS, {"f.txt": "base\n"}, conflict_check="line")

    ran = box.run(repo / "tasks.toml")

    assert ran.code == 0, ran
    assert show(repo, "main", "f.txt") == "base\nsame\n"
    assert ran.event("merge")["reruns"] == []
    assert_clean(repo)


def test_an_unknown_conflict_check_is_bad_input(tmp_path: Path, box: Sandbox) -> None:
    repo = repo_with(tmp_path, SAME_APPENDS, {"f.txt": "base\n"}, conflict_check="word")
    base = rev(repo, "main")

    ran = box.cli("run", repo / "tasks.toml", cwd=repo)

    assert ran.code == 2, ran
    assert "conflict_check" in ran.err and "'file'" in ran.err and "'line'" in ran.err, ran
    assert "Traceback" not in ran.text
    assert rev(repo, "main") == base and nova_branches(repo) == []


# ------------------------------------------------------------------------------- a kill while landing

# Runs the CLI with a SIGKILL planted in the landing. Under the __main__ guard: multiprocessing's
# forkserver imports the main module again, where nothing must be patched or run.
KILLING_DRIVER = textwrap.dedent("""\
    import os
    import signal
    import sys


    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)


    if __name__ == "__main__":
        import novaproc.isolation.landing as landing
        import novaproc.isolation.merge as merge
        from novaproc.cli.main import main

        where = sys.argv.pop(1)
        if where == "set_ref":  # the checkout is advanced, the target ref not yet moved
            real_set_ref = landing.Repo.set_ref

            def set_ref(self, ref, *args, **kwargs):
                if ref == "refs/heads/main":
                    die()
                return real_set_ref(self, ref, *args, **kwargs)

            landing.Repo.set_ref = set_ref
        else:  # the target ref moved, the run not yet finished
            merge._delete_merged_branches = die
        sys.exit(main(sys.argv[1:]))
    """)


KILL_POINTS = ["set_ref", "_delete_merged_branches"]


def killed_in_landing(tmp_path: Path, box: Sandbox, repo: Path, where: str) -> Ran:
    """`run tasks.toml --json` through KILLING_DRIVER, SIGKILLed at `where` in the landing."""
    driver = tmp_path / "driver.py"
    driver.write_text(KILLING_DRIVER)
    proc = subprocess.run([sys.executable, str(driver), where, "run", str(repo / "tasks.toml"), "--json"],
                          cwd=repo, env=clean_env(box.env), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60, check=False)
    killed = Ran(proc.returncode, proc.stdout, proc.stderr)
    assert killed.code == -signal.SIGKILL, killed
    return killed


@pytest.mark.parametrize("where", KILL_POINTS)
def test_a_sigkill_during_the_landing_is_finished_by_resume(tmp_path: Path, box: Sandbox, where: str) -> None:
    tasks = {"a": {"cmd": "echo a > a.txt", "writes": ["a.txt"]},
             "b": {"cmd": "echo b >> f.txt", "writes": ["f.txt"]}}
    repo = repo_with(tmp_path, tasks, {"f.txt": "base\n"})
    base = rev(repo, "main")

    run_id = killed_in_landing(tmp_path, box, repo, where).run_id

    status = box.cli("status", run_id)
    assert status.code == 0, status
    assert "crashed" in status.out and "landing" in status.out and "interrupted" in status.out, status
    assert "resume finishes it" in status.out, status
    landing = box.status(run_id)["interrupted_landing"]
    assert landing["old"] == base
    assert rev(repo, "main") == (base if where == "set_ref" else landing["new"])  # killed where meant

    resumed = box.cli("resume", run_id, "--json", cwd=repo)

    assert resumed.code == 0, resumed
    assert_clean(repo)
    assert show(repo, "main", "a.txt") == "a\n"
    assert show(repo, "main", "f.txt") == "base\nb\n"
    assert (repo / "a.txt").read_text() == "a\n" and (repo / "f.txt").read_text() == "base\nb\n"
    assert git_run(repo, "fsck", "--no-progress").returncode == 0
    assert box.status(run_id)["status"] == "done"
    assert_no_leftovers(repo, box)


@pytest.mark.parametrize("where", KILL_POINTS)
def test_a_sigkill_during_the_landing_of_a_deletion_is_finished_by_resume(
        tmp_path: Path, box: Sandbox, where: str) -> None:
    tasks = {"a": {"cmd": "echo a > a.txt", "writes": ["a.txt"]},
             "b": {"cmd": "rm gone.txt", "writes": ["gone.txt"]}}
    repo = repo_with(tmp_path, tasks, {"gone.txt": "bye\n"})
    run_id = killed_in_landing(tmp_path, box, repo, where).run_id

    resumed = box.cli("resume", run_id, "--json", cwd=repo)

    assert resumed.code == 0, resumed
    assert_clean(repo)
    assert show(repo, "main", "a.txt") == "a\n" and show(repo, "main", "gone.txt") is None
    assert not (repo / "gone.txt").exists()


def test_resume_of_an_interrupted_landing_says_what_it_did(tmp_path: Path, box: Sandbox) -> None:
    repo = repo_with(tmp_path, {"a": {"cmd": "echo a > a.txt", "writes": ["a.txt"]}})
    run_id = killed_in_landing(tmp_path, box, repo, "set_ref").run_id

    resumed = box.cli("resume", run_id, cwd=repo)  # the plain view

    assert resumed.code == 0, resumed
    assert "uncommitted" not in resumed.text, resumed  # there is none: the result was half-landed
    assert "interrupted landing" in resumed.text, resumed


# ------------------------------------------------------------------------------- resume after a gc

def test_resume_after_clean_all_and_a_gc_runs_a_lost_result_again(tmp_path: Path, box: Sandbox) -> None:
    counter = tmp_path / "a-ran"
    tasks = {"a": {"cmd": f'echo a > a.txt; echo a >> "{counter}"', "writes": ["a.txt"]},
             "b": {"cmd": "exit 1", "writes": ["b.txt"]}}
    repo = repo_with(tmp_path, tasks)
    ran = box.run(repo / "tasks.toml", "--no-merge")
    assert ran.code == 1, ran
    assert ran.states() == {"a": "done", "b": "failed"}
    a_commit = next(t["commit"] for t in box.status(ran.run_id)["tasks"] if t["id"] == "a")
    assert box.cli("clean", "--all", cwd=repo).code == 0
    git(repo, "reflog", "expire", "--expire=now", "--all")
    git(repo, "gc", "-q", "--prune=now")
    assert git_run(repo, "cat-file", "-e", f"{a_commit}^{{commit}}").returncode != 0  # a's result is gone

    fixed = {**tasks, "b": {"cmd": "echo b > b.txt", "writes": ["b.txt"]}}
    (repo / "tasks.toml").write_text(tasks_toml(fixed))
    git(repo, "commit", "-qam", "b fixed")
    resumed = box.cli("resume", ran.run_id, "--json", cwd=repo)

    assert resumed.code == 0, resumed
    assert "Traceback" not in resumed.text and "ValueError" not in resumed.text
    assert lines_in(counter) == 2  # a ran again
    holding_a = [b for b in ("main", *nova_branches(repo)) if show(repo, b, "a.txt") == "a\n"]
    assert holding_a, (nova_branches(repo), resumed)


# ------------------------------------------------------------------------------- verify

TWO_TASKS = {t: {"cmd": f"echo {t} > {t}.txt", "writes": [f"{t}.txt"]} for t in ("a", "b")}


def test_a_verify_failing_once_is_flaky_and_blames_nobody(tmp_path: Path, box: Sandbox) -> None:
    count = tmp_path / "verify-runs"
    repo = repo_with(tmp_path, TWO_TASKS, verify=counter_cmd(count, passes_from=2))

    ran = box.run(repo / "tasks.toml")

    assert ran.code == 0, ran
    assert runs_of(count) == 2  # failed on the tip, passed on its retry: no bisection
    merge = ran.event("merge")
    assert merge["culprit"] is None and merge["left_out"] == {}, merge
    assert "flaky" in ran.notes
    assert tree(repo)["a.txt"] == "a\n" and tree(repo)["b.txt"] == "b\n"
    assert_clean(repo)
    assert_no_leftovers(repo, box)


def test_with_verify_retries_0_a_failure_is_believed_and_bisected(tmp_path: Path, box: Sandbox) -> None:
    count = tmp_path / "verify-runs"
    repo = repo_with(tmp_path, TWO_TASKS, verify=counter_cmd(count, passes_from=2), verify_retries=0)

    ran = box.run(repo / "tasks.toml")

    assert ran.code == 4, ran
    merge = ran.event("merge")
    assert merge["culprit"] == "b", merge  # the tip failed once; with a alone it passed
    assert "flaky" not in ran.notes
    assert show(repo, "main", "a.txt") == "a\n" and show(repo, "main", "b.txt") is None


def test_a_result_building_on_the_culprits_is_named_as_left_out(tmp_path: Path, box: Sandbox) -> None:
    tasks = {
        "bad": {"cmd": "echo bad > bad.txt", "writes": ["bad.txt"]},
        "later": {"cmd": "echo later > later.txt", "writes": ["later.txt"], "depends_on": ["bad"]},
        "good": {"cmd": "echo good > good.txt", "writes": ["good.txt"]},
    }
    repo = repo_with(tmp_path, tasks, verify="test ! -e bad.txt")

    ran = box.run(repo / "tasks.toml")

    assert ran.code == 4, ran
    merge = ran.event("merge")
    assert merge["culprit"] == "bad" and set(merge["left_out"]) == {"bad", "later"}, merge
    notes = ran.summary["notes"]
    assert any("verify fails with bad's result" in n for n in notes), notes
    later = [n for n in notes if n.startswith("later:")]
    assert later and "left out" in later[0] and "bad" in later[0], notes
    assert f"nova/{ran.run_id}/later" in later[0]
    assert show(repo, "main", "good.txt") == "good\n"
    assert show(repo, "main", "bad.txt") is None and show(repo, "main", "later.txt") is None


def test_a_result_building_on_a_conflicting_result_is_named_as_left_out(tmp_path: Path, box: Sandbox) -> None:
    tasks = {
        "one": {"cmd": "echo one >> shared.txt"},
        "two": {"cmd": "echo two >> shared.txt"},  # undeclared: conflicts with one's result
        "three": {"cmd": "echo three > three.txt", "writes": ["three.txt"], "depends_on": ["two"]},
    }
    repo = repo_with(tmp_path, tasks, {"shared.txt": "base\n"}, on_conflict="fail")

    ran = box.run(repo / "tasks.toml")

    assert ran.code == 3, ran
    assert set(ran.event("merge")["left_out"]) == {"two", "three"}, ran
    notes = ran.summary["notes"]
    assert any(n.startswith("two: conflicts") for n in notes), notes
    three = [n for n in notes if n.startswith("three:")]
    assert three and "left out" in three[0] and "two" in three[0], notes
    assert f"nova/{ran.run_id}/three" in three[0]
    assert show(repo, f"nova/{ran.run_id}/three", "three.txt") == "three\n"
    assert show(repo, "main", "shared.txt") == "base\none\n" and show(repo, "main", "three.txt") is None


# ------------------------------------------------------------------------------- target moved during verify

def repo_moved_by_verify(tmp_path: Path, tasks: dict[str, dict[str, object]], files: dict[str, str],
                         theirs: dict[str, str], then: str = "true") -> Path:
    """A repository holding `files` and tasks.toml, whose verify, on its first run only, commits
    `theirs` to main in the user's checkout (the target moves while verify runs), then runs `then`."""
    repo = make_repo(tmp_path / "repo", files)
    marker = tmp_path / "committed"
    writes = "; ".join(f"echo {text} > {name}" for name, text in theirs.items())
    verify = (f'if [ ! -e "{marker}" ]; then touch "{marker}"; (cd "{repo}" && {writes} && git add -A '
              f'&& git commit -qm "theirs, during verify"); fi; {then}')
    (repo / "tasks.toml").write_text(tasks_toml(tasks, verify=verify))
    git(repo, "add", "tasks.toml")
    git(repo, "commit", "-qm", "tasks")
    return repo


def test_a_target_moved_during_verify_is_verified_again_and_lands(tmp_path: Path, box: Sandbox) -> None:
    count = tmp_path / "verify-runs"
    repo = repo_moved_by_verify(tmp_path, TWO_TASKS, {"README": "hello\n"}, {"theirs.txt": "theirs"},
                                then=counter_cmd(count, passes_from=1))

    ran = box.run(repo / "tasks.toml")

    assert ran.code == 0, ran
    assert "verified again" in ran.notes, ran
    assert runs_of(count) == 2  # the result, then the result merged onto the new tip
    main = tree(repo)
    assert (main["theirs.txt"], main["a.txt"], main["b.txt"]) == ("theirs\n", "a\n", "b\n")
    assert git(repo, "log", "--format=%s", "main").count("theirs, during verify") == 1
    assert_clean(repo)
    assert_no_leftovers(repo, box)


def test_a_target_moved_during_verify_by_a_conflicting_commit_waits_and_says_why(
        tmp_path: Path, box: Sandbox) -> None:
    tasks = {"edit": {"cmd": "echo task > f.txt", "writes": ["f.txt"]}}
    repo = repo_moved_by_verify(tmp_path, tasks, {"f.txt": "base\n"}, {"f.txt": "user"})

    ran = box.run(repo / "tasks.toml")

    assert ran.code == 3, ran
    waiting = f"nova/{ran.run_id}/merged"
    assert waiting in nova_branches(repo)
    assert show(repo, waiting, "f.txt") == "task\n"
    assert show(repo, "main", "f.txt") == "user\n"
    assert_clean(repo)
    notes = ran.notes
    assert "commit or stash" not in notes.lower(), notes  # nothing is uncommitted
    assert "moved" in notes and "conflict" in notes and "f.txt" in notes and waiting in notes, notes


def test_a_target_moved_during_verify_into_a_failing_verify_waits(tmp_path: Path, box: Sandbox) -> None:
    """The result passes verify alone; merged onto the target's new commit it fails: it must not land."""
    repo = repo_moved_by_verify(tmp_path, {"a": TWO_TASKS["a"]}, {"README": "hello\n"},
                                {"theirs.txt": "theirs"}, then="! { test -e theirs.txt && test -e a.txt; }")

    ran = box.run(repo / "tasks.toml")

    assert ran.code == 3, ran
    waiting = f"nova/{ran.run_id}/merged"
    assert show(repo, waiting, "a.txt") == "a\n"
    assert show(repo, "main", "a.txt") is None and show(repo, "main", "theirs.txt") == "theirs\n"
    assert "moved" in ran.notes and "verify fails" in ran.notes and waiting in ran.notes, ran.notes
    assert "commit or stash" not in ran.notes.lower()
    assert_clean(repo)
