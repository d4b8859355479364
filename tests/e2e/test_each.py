"""End to end: `novaproc each`, fan-out from the command line (DESIGN.md, "Fan-out" in section 1
and "Fan-out from the command line" in section 4). Real repositories in tmp_path, the real CLI
in a subprocess, private state, worktree and lock folders (support.sandbox.Sandbox); items come
from `:::`, --glob, --from and standard input. Each repository commits a nova.toml without the
CPU/memory throttle (support.tasks.NO_THROTTLE), as `each` reads its settings from there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from support.cli import run_cli
from support.repo import GIT_ENV, commit_all, git, make_repo, nova_branches, rev, show
from support.sandbox import RUN_ID, Ran, Sandbox, assert_clean, assert_no_leftovers
from support.tasks import NO_THROTTLE, tasks_toml, toml_value

NOVA_TOML = "".join(f"{k} = {toml_value(v)}\n" for k, v in NO_THROTTLE.items())
APPEND_X = ["sh", "-c", 'printf x >> "$1"', "sh"]  # argv: appends "x" to the file given last
# a deterministic edit of each file named: upper case, and a line naming the file and its size
REWRITE = """import pathlib, sys
for name in sys.argv[1:]:
    path = pathlib.Path(name)
    text = path.read_text()
    path.write_text(text.upper() + f"# rewritten {path.name} {len(text)}\\n")
"""


def repo_with(tmp_path: Path, files: dict[str, str]) -> Path:
    return make_repo(tmp_path / "repo", {"nova.toml": NOVA_TOML, **files})


def each(env: dict[str, str], *args: str | Path, cwd: Path, input: str | None = None) -> Ran:
    """`novaproc each ARGS` in `cwd` with `env` (a sandbox's); stdin is `input`, else empty."""
    proc = run_cli("each", *args, cwd=cwd, env=env, input=input)
    return Ran(proc.returncode, proc.stdout, proc.stderr)


def runs_in(state: Path) -> list[Path]:
    folder = state / "runs"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def planned_items(ran: Ran) -> list[str]:
    assert ran.code == 0, ran
    return [t["item"] for t in json.loads(ran.out)["tasks"]]


# ------------------------------------------------------------------- hostile file names

HOSTILE = ["sp ace.txt", "it's.txt", 'dq"uote.txt', "semi;colon.txt", "$(touch canary).txt",
           "back`touch canary`tick.txt", "new\nline.txt", "-leading.txt", "naïve-日本.txt",
           "br{ace}.txt", "sub dir/in $(touch canary) ner.txt"]


@pytest.mark.parametrize("mode", ["argv", "shell", "tasks file"])
def test_hostile_file_names_are_each_one_argument_and_nothing_else_runs(
        tmp_path: Path, box: Sandbox, mode: str) -> None:
    repo = repo_with(tmp_path, dict.fromkeys(HOSTILE, "0"))
    if mode == "tasks file":
        (repo / "tasks.toml").write_text(tasks_toml(
            {"fix": {"foreach": "**/*.txt", "cmd": "printf x >> {}", "writes": ["{}"]}}))
        commit_all(repo, "tasks")
        ran = box.cli("run", repo / "tasks.toml", "--json", "-j", "2", cwd=repo)
    else:
        listed = git(repo, "ls-files", "-z", "--", "*.txt", strip=False)
        assert sorted(listed.split("\0")[:-1]) == sorted(HOSTILE)
        cmd = ["--shell", "--", "printf x >> {}"] if mode == "shell" else ["--", *APPEND_X, "{}"]
        ran = each(box.env, "-0", "-j", "2", "--json", "--writes", "{}", *cmd, cwd=repo, input=listed)

    assert ran.code == 0, ran
    assert list(ran.states().values()) == ["done"] * len(HOSTILE), ran
    for name in HOSTILE:
        assert show(repo, "main", name) == "0x", name
        assert (repo / name).read_text() == "0x", name
    # the repository, the state and the worktree folder are all inside tmp_path
    assert box.worktrees.is_relative_to(tmp_path)
    assert [p for p in tmp_path.rglob("*") if p.name == "canary"] == []
    assert sorted(git(repo, "ls-files", "-z", "--", "*.txt", strip=False).split("\0")[:-1]) == sorted(HOSTILE)
    assert_clean(repo)
    assert_no_leftovers(repo, box)


# ------------------------------------------------------------------------- item sources

SOURCES = [  # (options before CMD, after CMD, stdin, the items)
    pytest.param([], ["a", "b", "c"], "ignored\n", ["a", "b", "c"], id="::: and stdin unread"),
    pytest.param([], ["-x", "--y", "--writes", ":::"], None, ["-x", "--y", "--writes", ":::"],
                 id="::: options as items"),
    pytest.param(["--glob", "src/*.py", "--glob", "docs/*.md"], [], None,
                 ["src/a.py", "src/b.py", "docs/x.md"], id="--glob twice"),
    pytest.param(["--glob", "src/**/*.py"], [], None, ["src/a.py", "src/b.py", "src/deep/c.py"],
                 id="--glob **"),
    pytest.param(["--from", "@list"], [], None, ["one", "two words", "-three"], id="--from FILE"),
    pytest.param(["--from", "-"], [], "p\nq r\n", ["p", "q r"], id="--from -"),
    pytest.param([], [], "p\n\nq r\n", ["p", "q r"], id="stdin"),
    pytest.param(["-0"], [], "new\nline\0two\0", ["new\nline", "two"], id="-0 stdin"),
    pytest.param(["--null", "--from", "-"], [], "a b\0\0c\0", ["a b", "c"], id="--null --from -"),
]


@pytest.mark.parametrize(("before", "after", "stdin", "items"), SOURCES)
def test_items_come_from_the_arguments_globs_a_file_or_standard_input(
        tmp_path: Path, box: Sandbox, before: list[str], after: list[str], stdin: str | None,
        items: list[str]) -> None:
    files = {"src/a.py": "", "src/b.py": "", "src/deep/c.py": "", "docs/x.md": "", "top.py": ""}
    repo = repo_with(tmp_path, files)
    (repo / "src" / "untracked.py").write_text("")  # --glob matches tracked files only
    listing = tmp_path / "list.txt"
    listing.write_text("one\ntwo words\n\n-three\n")
    before = [str(listing) if arg == "@list" else arg for arg in before]
    after = [":::", *after] if after else []

    ran = each(box.env, "--dry-run", "--json", *before, "--", "true", *after, cwd=repo, input=stdin)

    assert planned_items(ran) == items
    assert runs_in(box.state) == []


def test_items_that_look_like_options_go_last_to_a_command_without_placeholder(
        tmp_path: Path, box: Sandbox) -> None:
    repo = repo_with(tmp_path, {})

    ran = each(box.env, "--json", "-j", "2", "--id", "lint", "--writes", "got{}", "--",
               "sh", "-c", 'printf "%s|" "$@" > "got$2"', "sh", "first", ":::", "-x", "--y", cwd=repo)

    assert ran.code == 0, ran
    assert ran.states() == {"lint.-x": "done", "lint.--y": "done"}
    assert show(repo, "main", "got-x") == "first|-x|"
    assert show(repo, "main", "got--y") == "first|--y|"
    assert_clean(repo)


@pytest.mark.parametrize(("args", "stdin"), [
    pytest.param([], None, id="empty stdin"), pytest.param([], "\n\n", id="blank lines"),
    pytest.param(["-0"], "\0", id="-0"), pytest.param(["--from", "-"], "", id="--from -")])
def test_no_item_is_a_clean_exit_that_says_so_and_creates_no_run(
        tmp_path: Path, box: Sandbox, args: list[str], stdin: str | None) -> None:
    repo = repo_with(tmp_path, {"a.txt": "a"})
    marker = tmp_path / "ran"

    ran = each(box.env, *args, "--", "touch", marker, cwd=repo, input=stdin)

    assert ran.code == 0, ran
    assert ran.out == ""
    assert "nothing to run" in ran.err and len(ran.err.splitlines()) == 1, ran
    assert not marker.exists()
    assert runs_in(box.state) == []
    assert nova_branches(repo) == []


def test_lines_end_at_newlines_only(tmp_path: Path, box: Sandbox) -> None:
    repo = repo_with(tmp_path, {})
    names = ["a\u2028b.txt", "c\x0cd.txt", "e\x85f.txt", "g\x1eh.txt"]

    ran = each(box.env, "--dry-run", "--json", "--", "true", cwd=repo, input="".join(n + "\n" for n in names))

    assert planned_items(ran) == names


# ------------------------------------------------------------------------ where it runs

def test_items_and_writes_are_relative_to_the_current_folder(tmp_path: Path, box: Sandbox) -> None:
    repo = repo_with(tmp_path, {"a.txt": "top", "src/a.txt": "a", "src/deep/d.txt": "d",
                                "other/o.txt": "o"})
    listed = git(repo / "src", "ls-files", strip=False)
    assert listed.split() == ["a.txt", "deep/d.txt"]

    ran = each(box.env, "--json", "-j", "2", "--writes", "{}", "--", *APPEND_X, cwd=repo / "src",
               input=listed)

    assert ran.code == 0, ran
    assert ran.states() == {"each.a.txt": "done", "each.deep_d.txt": "done"}
    assert {f: show(repo, "main", f) for f in ("a.txt", "src/a.txt", "src/deep/d.txt", "other/o.txt")} \
        == {"a.txt": "top", "src/a.txt": "ax", "src/deep/d.txt": "dx", "other/o.txt": "o"}
    assert_clean(repo)
    assert_no_leftovers(repo, box)


def test_an_absolute_item_in_the_repository_is_worked_on_in_the_worktree(
        tmp_path: Path, box: Sandbox) -> None:
    repo = repo_with(tmp_path, {"src/a.txt": "a"})

    ran = each(box.env, "--writes", "{}", "--", "sh", "-c", 'printf x >> "$1"', "sh", ":::",
               repo.resolve() / "src" / "a.txt", cwd=repo / "src")

    assert ran.code == 0, ran
    assert git(repo, "show", "main:src/a.txt") == "ax"  # landed: changed in a worktree, merged
    assert_clean(repo)


def test_an_absolute_item_outside_the_repository_from_a_subfolder_is_refused(
        tmp_path: Path, box: Sandbox) -> None:
    repo = repo_with(tmp_path, {"src/a.txt": "a"})
    shared = tmp_path / "shared.db"  # outside the repository: a machine-wide lock

    ran = each(box.env, "--writes", "{}", "--", "true", ":::", shared, cwd=repo / "src")

    assert ran.code == 2, ran
    assert str(shared) in ran.err and "root" in ran.err and len(ran.err.splitlines()) == 1
    assert runs_in(box.state) == []


@pytest.mark.parametrize("folder", ["we{ird}", "{}"])
def test_a_current_folder_with_braces_in_its_name(tmp_path: Path, box: Sandbox, folder: str) -> None:
    repo = repo_with(tmp_path, {f"{folder}/a.txt": "a"})

    ran = each(box.env, "--json", "--writes", "{}", "--", *APPEND_X, ":::", "a.txt", cwd=repo / folder)

    assert ran.code == 0, ran
    assert show(repo, "main", f"{folder}/a.txt") == "ax"


@pytest.mark.slow
def test_two_hundred_files_rewritten_in_worktrees_equal_the_rewrite_run_one_by_one(
        tmp_path: Path, box: Sandbox) -> None:
    files = {f"{top}/{sub}m{i}.py": f"def f{i}():\n    return {i * 7 % 13}  # {top}\n"
             for top in ("app", "lib", "tools", "tests", "docs") for sub in ("", "inner/")
             for i in range(20)}
    files |= {"README.md": "readme\n", "lib/data.json": "{}\n"}
    repo = repo_with(tmp_path, files)
    rewrite = tmp_path / "rewrite.py"
    rewrite.write_text(REWRITE)
    listed = git(repo, "ls-files", "*.py", strip=False)
    assert len(listed.split()) == 200
    before = rev(repo, "main^{tree}")
    serial = tmp_path / "serial"  # the same rewrite, one file after another, in a clone
    git(tmp_path, "clone", "-q", str(repo), str(serial))
    subprocess.run([sys.executable, rewrite, *listed.split()], cwd=serial, check=True)
    git(serial, "add", "-A")

    ran = each(box.env, "--json", "-j", "4", "--writes", "{}", "--", sys.executable, rewrite,
               cwd=repo, input=listed)

    assert ran.code == 0, ran
    assert list(ran.states().values()) == ["done"] * 200
    assert rev(repo, "main^{tree}") == git(serial, "write-tree") != before
    assert show(repo, "main", "app/inner/m3.py") == "DEF F3():\n    RETURN 8  # APP\n# rewritten m3.py 30\n"
    assert git(repo, "status", "--porcelain", strip=False) == ""
    assert_no_leftovers(repo, box)


# ------------------------------------------------------------------- a run like any other

def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path: Path, box: Sandbox) -> None:
    repo = repo_with(tmp_path, {"a.txt": "a", "b.txt": "b"})
    base = rev(repo, "main")

    ran = each(box.env, "--dry-run", "--writes", "{}", "--", *APPEND_X, ":::", "a.txt", "b.txt", cwd=repo)

    assert ran.code == 0, ran
    assert "each.*" in ran.out and "2 tasks" in ran.out and "a.txt, b.txt" in ran.out, ran
    assert rev(repo, "main") == base and (repo / "a.txt").read_text() == "a"
    assert runs_in(box.state) == []
    assert_no_leftovers(repo, box)


def test_json_events_and_a_junit_report(tmp_path: Path, box: Sandbox) -> None:
    repo = repo_with(tmp_path, {"a.txt": "a", "b.txt": "b"})
    report = tmp_path / "report.xml"

    ran = each(box.env, "--json", "--junit", report, "--writes", "{}", "--", *APPEND_X,
               ":::", "a.txt", "b.txt", cwd=repo)

    assert ran.code == 0, ran
    events = [json.loads(line) for line in ran.out.splitlines()]  # every line is one event
    assert events[0]["event"] == "run_started" and events[0]["tasks"] == 2
    assert {e["run_id"] for e in events} == {ran.run_id}
    assert ran.states() == {"each.a.txt": "done", "each.b.txt": "done"}
    suite = ET.parse(report).getroot()
    assert suite.get("tests") == "3" and suite.get("failures") == "0"
    assert sorted(case.get("name") for case in suite.iter("testcase")) == ["each.a.txt", "each.b.txt",
                                                                          "landing"]
    assert show(repo, "main", "a.txt") == "ax" and show(repo, "main", "b.txt") == "bx"


def test_no_merge_leaves_each_result_on_its_branch(tmp_path: Path, box: Sandbox) -> None:
    repo = repo_with(tmp_path, {"a.txt": "a", "b.txt": "b"})
    base = rev(repo, "main")

    ran = each(box.env, "--json", "--no-merge", "--writes", "{}", "--", *APPEND_X, ":::", "a.txt", "b.txt",
               cwd=repo)

    assert ran.code == 0, ran
    run_id = ran.run_id
    assert sorted(nova_branches(repo)) == [f"nova/{run_id}/each.a.txt", f"nova/{run_id}/each.b.txt"]
    assert show(repo, f"nova/{run_id}/each.a.txt", "a.txt") == "ax"
    assert show(repo, f"nova/{run_id}/each.b.txt", "b.txt") == "bx"
    assert rev(repo, "main") == base
    assert_clean(repo)


STEP = """import pathlib, sys
counter, flag, item = sys.argv[1:]
with open(counter, "a") as f:
    f.write(item + "\\n")
print("working on", item)
if item == "b.txt" and pathlib.Path(flag).exists():
    sys.exit(7)
path = pathlib.Path(item)
path.write_text(path.read_text().upper())
"""


def test_background_wait_status_logs_and_resume_need_neither_file_nor_items(tmp_path: Path) -> None:
    repo = repo_with(tmp_path, {"a.txt": "a", "b.txt": "b", "c.txt": "c"})
    step, counter, flag = tmp_path / "step.py", tmp_path / "counter", tmp_path / "fail-b"
    step.write_text(STEP)
    flag.touch()
    # the state folder is the default, .nova at the root: commands from elsewhere name it
    env = {"NOVA_WORKTREE_DIR": str(tmp_path / "worktrees"), "NOVA_LOCK_DIR": str(tmp_path / "locks"),
           **GIT_ENV}
    state = ["--state-dir", str(repo / ".nova")]

    def cli(*args: str) -> Ran:
        proc = run_cli(*args, cwd=tmp_path, env=env)
        return Ran(proc.returncode, proc.stdout, proc.stderr)

    launched = each(env, "--background", "-j", "2", "--writes", "{}", "--", sys.executable,
                    step, counter, flag, ":::", "a.txt", "b.txt", "c.txt", cwd=repo)
    assert launched.code == 0, launched
    run_id = launched.out.strip()
    assert launched.out == run_id + "\n" and RUN_ID.fullmatch(run_id), launched

    waited = cli("wait", run_id, *state)
    assert waited.code == 1, waited
    status = cli("status", run_id, "--json", *state)
    assert status.code == 0, status
    assert {t["id"]: t["state"] for t in json.loads(status.out)["tasks"]} == {
        "each.a.txt": "done", "each.b.txt": "failed", "each.c.txt": "done"}
    logs = cli("logs", run_id, "each.b.txt", *state)
    assert logs.code == 0 and "working on b.txt" in logs.out, logs
    assert sorted(counter.read_text().split()) == ["a.txt", "b.txt", "c.txt"]

    flag.unlink()
    resumed = cli("resume", run_id, "--json", *state)

    assert resumed.code == 0, resumed
    assert resumed.states() == {"each.a.txt": "done", "each.b.txt": "done", "each.c.txt": "done"}
    assert sorted(counter.read_text().split()) == ["a.txt", "b.txt", "b.txt", "c.txt"]  # only b again
    assert [show(repo, "main", f) for f in ("a.txt", "b.txt", "c.txt")] == ["A", "B", "C"]
    assert git(repo, "status", "--porcelain", strip=False) == ""
    assert nova_branches(repo) == []


# ---------------------------------------------------------------------------- bad usage

BAD = [  # (arguments, what the one line on stderr names)
    pytest.param(["--writes", "{}", ":::", "a.txt"], "no command", id="no command"),
    pytest.param(["--writes", "{bogus}", "--", "@touch", ":::", "a.txt"], "--writes", id="--writes {bogus}"),
    pytest.param(["--id", "a/b", "--", "@touch", ":::", "a.txt"], "--id", id="--id a/b"),
    pytest.param(["--glob", "nomatch*", "--", "@touch"], "--glob", id="--glob matching nothing"),
    pytest.param(["--shell", "--", "touch '{}'", ":::", "a.txt"], "quotes", id="--shell '{}'"),
    pytest.param(["--shell", "--", 'touch "{name}"', ":::", "a.txt"], "quotes", id="--shell \"{name}\""),
    pytest.param(["-j", "0", "--", "@touch", ":::", "a.txt"], "-j", id="-j 0"),
]


@pytest.mark.parametrize(("args", "named"), BAD)
def test_bad_usage_is_exit_2_in_one_line_and_runs_nothing(
        tmp_path: Path, box: Sandbox, args: list[str], named: str) -> None:
    repo = repo_with(tmp_path, {"a.txt": "a"})
    marker = tmp_path / "ran"
    args = [a for arg in args for a in (["touch", str(marker)] if arg == "@touch" else [arg])]

    ran = each(box.env, *args, cwd=repo, input="a.txt\n")

    assert ran.code == 2, ran
    assert ran.err.startswith("novaproc: error:") and len(ran.err.splitlines()) == 1, ran
    assert named in ran.err and "Traceback" not in ran.err, ran
    assert not marker.exists()
    assert runs_in(box.state) == []
    assert nova_branches(repo) == [] and (repo / "a.txt").read_text() == "a"
