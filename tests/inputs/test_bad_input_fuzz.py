"""Fuzz of bad input: mutations of one valid tasks file, each refused before anything runs.

From a fixed seed, every kind of mutation is made once and then more at random (at least
MIN_CASES in all): a NUL byte in each kind of string, environment names that cannot be set,
unknown keys, a wrong type or an out-of-range number in each field and setting, bad task ids,
relative paths that climb out, worktree_include outside the repository, dependency cycles and
unknown dependencies, ids that differ only in case, `[[tasks]]`, broken TOML, invalid UTF-8, an
empty file, a directory, a FIFO, and paths that leave the repository through a symlink.

Each case must end with exit 2 and exactly one line on stderr, "novaproc: error: ...", with no
traceback, and nothing run: every task of the file would create a marker file. `plan` runs in
this process (a process per case would cost a Python start-up each); a sample of the cases, and
every special file, goes through a real `novaproc run` (and `plan`) in a subprocess.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from support.cli import run_cli
from support.repo import make_repo

from novaproc.cli.main import main

SEED = 1234
MIN_CASES = 400
RUN_SAMPLE = 30  # cases also given to a real `novaproc run` (a subprocess each)
HANG = 20  # seconds: a command on bad input that has not ended by then hangs
MARK = "@MARK@"  # stands for the case's marker prefix in the file's text


# ---------------------------------------------------------------- the valid file mutated


def valid_tasks() -> dict[str, Any]:
    """A valid tasks file (as TOML data) that uses every field; each task, if it ran, would
    create the file MARK-<its id>."""
    return {
        "run": {"max_parallel": 2, "cpu_limit": 100, "memory_limit": 100, "kill_grace": 1,
                "isolation": "none", "worktree_include": [".env"]},
        "tasks": {
            "build": {"cmd": f"touch {MARK}-build", "description": "build it", "writes": ["out/"],
                      "reads": ["src/"], "env": {"MODE": "fast"}, "cwd": "src", "timeout": "30s",
                      "retries": 1, "cpu": 1, "kind": "normal", "resources": ["disk"],
                      "allow_failure": False},
            "check": {"cmd": ["touch", f"{MARK}-check"], "depends_on": ["build"],
                      "reads": ["out/"], "isolation": "none", "resources": {"disk": 1}},
            "make": {"call": "os:mkdir", "args": [f"{MARK}-make"], "kwargs": {"mode": 448},
                     "description": "a call task"},
        },
    }


@dataclass
class Case:
    """One bad input: TOML data (dumped), raw bytes, or a special file ("dir", "fifo")."""

    name: str
    data: dict[str, Any] | None = None
    raw: bytes | None = None
    special: str | None = None
    in_repo: bool = False  # written inside the repository that holds the `esc` symlink
    expect: str = ""  # a fragment the message must hold

    def write(self, folder: Path, index: int) -> tuple[Path, str]:
        """The case's tasks file in `folder`, and its marker prefix."""
        path, mark = folder / f"case-{index}.toml", str(folder / f"ran-{index}")
        if self.special == "dir":
            path.mkdir()
        elif self.special == "fifo":
            os.mkfifo(path)
        else:
            body = self.raw if self.raw is not None else tomli_w.dumps(self.data or {}).encode()
            path.write_bytes(body.replace(MARK.encode(), mark.encode()))
        return path, mark


def mutated(name: str, change: Callable[[dict[str, Any]], object], **case: Any) -> Case:
    data = valid_tasks()
    change(data)
    return Case(name, data=data, **case)


def holder(data: dict[str, Any], where: tuple[str | int, ...]) -> Any:
    """The table or list that holds the value at `where` (keys and indexes from the top)."""
    for key in where[:-1]:
        data = data[key]
    return data


def setter(*where: str | int, value: object) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        holder(data, where)[where[-1]] = value
    return change


def with_nul(rng: random.Random, text: str) -> str:
    at = rng.randint(0, len(text))
    return text[:at] + "\0" + text[at:]


# ---------------------------------------------------------------- the kinds of mutation

# where a string lives in valid_tasks(), for NUL bytes
STRING_PLACES: list[tuple[str | int, ...]] = [
    ("tasks", "build", "cmd"), ("tasks", "check", "cmd", 0), ("tasks", "check", "cmd", 1),
    ("tasks", "build", "env", "MODE"), ("tasks", "build", "writes", 0), ("tasks", "build", "reads", 0),
    ("tasks", "build", "cwd"), ("tasks", "build", "description"), ("tasks", "check", "depends_on", 0),
    ("tasks", "build", "timeout"), ("tasks", "build", "kind"), ("tasks", "build", "resources", 0),
    ("tasks", "make", "call"), ("tasks", "make", "args", 0), ("tasks", "check", "isolation"),
    ("run", "isolation"), ("run", "worktree_include", 0),
]
# strings the valid file does not hold: a setting added with a NUL in it
NEW_STRINGS: list[tuple[tuple[str, ...], str]] = [
    (("run", "state_dir"), "state"), (("run", "worktree_dir"), "/tmp/nova-wt"),
    (("run", "worktree_setup"), "make deps"), (("run", "verify"), "make test"),
    (("run", "target"), "main"), (("tasks", "build", "env", "EXTRA"), "value"),
    (("tasks", "make", "kwargs", "name"), "value"),
]


def nul_at(rng: random.Random, where: tuple[str | int, ...]) -> Case:
    """A NUL byte in the string at `where`, one of the valid file's or one of NEW_STRINGS."""
    added = dict(NEW_STRINGS)

    def change(data: dict[str, Any]) -> None:
        node = holder(data, where)
        node[where[-1]] = with_nul(rng, added[where] if where in added else node[where[-1]])
    return mutated(f"NUL in {'.'.join(map(str, where))}", change)


def nul_in_a_string(rng: random.Random) -> Case:
    return nul_at(rng, rng.choice([*STRING_PLACES, *(where for where, _ in NEW_STRINGS)]))


def nul_in_a_key(rng: random.Random) -> Case:
    """A NUL in an env name, a task id, a resource name or a kwargs name."""
    choice = rng.choice(["env", "id", "resource", "kwarg"])

    def rename(table: dict[str, Any], old: str) -> None:
        table[with_nul(rng, old)] = table.pop(old)

    def change(data: dict[str, Any]) -> None:
        tasks = data["tasks"]
        if choice == "env":
            rename(tasks["build"]["env"], "MODE")
        elif choice == "id":
            rename(tasks, "make")
        elif choice == "resource":
            tasks["check"]["resources"] = {with_nul(rng, "disk"): 1}
        else:
            rename(tasks["make"]["kwargs"], "mode")
    return mutated(f"NUL in a key ({choice})", change)


def bad_env_name(rng: random.Random) -> Case:
    name = rng.choice(["", "A=B", "=", "MODE=fast", "=X"])
    return mutated(f"env name {name!r}", setter("tasks", "build", "env", value={name: "x", "OK": "y"}))


# task fields: values of a wrong type or out of range (each one invalid whatever the rest)
BAD_FIELD_VALUES: dict[str, list[object]] = {
    "cmd": [5, True, 1.5, {"a": "b"}, [1], ["ls", 2], [["ls"]], "", "   ", []],
    "description": [5, True, [], {"a": "b"}],
    "depends_on": [5, True, [5], [{"a": "b"}], {"build": True}, [""]],
    "writes": [5, True, [5], [""], {"a": "b"}, [["x"]]],
    "reads": [5, False, [1.5], [""], {"a": "b"}],
    "resources": [5, "disk", [""], [5], {"disk": 0}, {"disk": -1}, {"disk": "1"}, {"disk": True},
                  {"disk": 1.5}, {"": 1}, ["a b"], ["-x"], {"a/b": 1}],
    "kind": ["banana", 5, True, ["git"]],
    "isolation": ["docker", 5, True, ["none"], "Worktree"],
    "timeout": ["-5s", "10x", 0, -1, True, "", "abc", [], "5s5s", "-1", "1h-5m", float("inf"), float("nan")],
    "retries": [-1, 101, "1", 1.5, True, [1], 2**63 - 1],
    "env": ["A=B", 5, ["A"], {"A": 5}, {"A": []}, {"A": {"B": "c"}}, {"A": True}],
    "cwd": [5, [], True, "../x", "a/../..", "..", "/etc"],
    "cpu": [0, -1, "2", 1.5, True, []],
    "allow_failure": ["yes", 1, [], "true"],
}
BAD_CALL_VALUES: dict[str, list[object]] = {
    "call": [5, "nocolon", "a:b:c", ":f", "m:", "1m:f", "m:f()", ["os:mkdir"], ""],
    "args": [5, "x", {"a": 1}, True],
    "kwargs": [5, [], "x", True],
}
BAD_SETTINGS: dict[str, list[object]] = {
    "max_parallel": [0, -1, 4097, "4", True, 1.5, [], 2**63 - 1],
    "cpu_limit": [0, -5, 101, "90", True, []],
    "memory_limit": [0, 100.5, -1, "x"],
    "kill_grace": [-1, 3601, "5", True],
    "fail_fast": ["yes", 1, []],
    "merge": ["maybe", 5, True],
    "on_conflict": ["retry", 5],
    "isolation": ["docker", 5],
    "undeclared_writes": ["ignore", 5, True],
    "verify": [5, [1], {"a": "b"}, True],
    "worktree_setup": [5, ["make"], True],
    "worktree_include": [5, True, 1.5, [5], {"a": "b"}, "../x"],
    "verify_retries": [-1, 101, "1"],
    "conflict_check": ["word", 5],
    "resources": [{"docker": 0}, {"docker": -2}, {"docker": "2"}, 5, ["docker"]],
    "state_dir": [5, True, []],
    "worktree_dir": [5, [], {"a": "b"}],
    "target": [5, []],
}


def task_field(key: str, value: object) -> Case:
    tid = "make" if key in BAD_CALL_VALUES else "build"
    return mutated(f"{tid}.{key} = {value!r}", setter("tasks", tid, key, value=value))


def setting(key: str, value: object) -> Case:
    return mutated(f"[run] {key} = {value!r}", setter("run", key, value=value))


def wrong_task_field(rng: random.Random) -> Case:
    key = rng.choice(sorted({**BAD_FIELD_VALUES, **BAD_CALL_VALUES}))
    return task_field(key, rng.choice({**BAD_FIELD_VALUES, **BAD_CALL_VALUES}[key]))


def wrong_setting(rng: random.Random) -> Case:
    key = rng.choice(sorted(BAD_SETTINGS))
    return setting(key, rng.choice(BAD_SETTINGS[key]))


def misspelt(rng: random.Random, word: str) -> str:
    at = rng.randrange(len(word))
    how = rng.choice(["drop", "double", "swap"])
    if how == "drop" and len(word) > 3:
        return word[:at] + word[at + 1:]
    if how == "swap" and at < len(word) - 1 and word[at] != word[at + 1]:
        return word[:at] + word[at + 1] + word[at] + word[at + 2:]
    return word[:at] + word[at] + word[at:]


def unknown_key(rng: random.Random) -> Case:
    """A misspelt task field, setting or top-level key (with a did-you-mean), or a key no
    spelling is near."""
    where = rng.choice(["task", "run", "top", "far"])

    def change(data: dict[str, Any]) -> None:
        if where == "task":
            body = data["tasks"]["build"]
            key = rng.choice(sorted(k for k in body if len(k) > 3))
            body[misspelt(rng, key)] = body.pop(key)
        elif where == "run":
            key = rng.choice(sorted(data["run"]))
            data["run"][misspelt(rng, key)] = data["run"].pop(key)
        elif where == "top":
            data[rng.choice(["task", "runs", "Tasks", "tasks_"])] = {}
        else:
            data["tasks"]["check"]["colour"] = "blue"
    return mutated(f"unknown key ({where})", change, expect="" if where == "far" else "did you mean")


BAD_IDS = ["", "a" * 65, "tâche", "ta sk", "x.lock", "a..b", "-lead", ".hidden", "_under", "x.git",
           "trailing.", "a/b", "emoji✓", "tab\tid", "q\"uote"]


def task_id(tid: str) -> Case:
    def change(data: dict[str, Any]) -> None:
        data["tasks"][tid] = data["tasks"].pop("make")
    return mutated(f"task id {tid!r}", change)


def bad_task_id(rng: random.Random) -> Case:
    return task_id(rng.choice(BAD_IDS))


CLIMBING = ["../x", "a/../../x", "*/../../etc", "src/**/../../../x", "./../x", "..", "a/b/../../..",
            "src/*/../../../..", "out/../../.."]


def climbing(key: str, value: object) -> Case:
    return setting(key, value) if key == "worktree_include" else task_field(key, value)


def climbing_path(rng: random.Random) -> Case:
    path = rng.choice(CLIMBING)
    return climbing(rng.choice(["writes", "reads", "worktree_include"]), rng.choice([[path], ["ok/", path]]))


def include_outside(rng: random.Random) -> Case:
    entry = rng.choice(["/abs", "/etc/passwd", "../x", "a/../../x", "/"])
    return mutated(f"worktree_include [{entry!r}]", setter("run", "worktree_include", value=[".env", entry]))


def bad_dependency(rng: random.Random) -> Case:
    how = rng.choice(["self", "pair", "ring", "unknown", "near"])

    def change(data: dict[str, Any]) -> None:
        tasks = data["tasks"]
        if how == "self":
            tasks["make"]["depends_on"] = ["make"]
        elif how == "pair":
            tasks["build"]["depends_on"] = ["check"]
        elif how == "ring":
            tasks["build"]["depends_on"], tasks["make"]["depends_on"] = ["make"], ["check"]
        elif how == "unknown":
            tasks["check"]["depends_on"] = ["build", "nothing-like-it"]
        else:
            tasks["check"]["depends_on"] = ["biuld"]
    return mutated(f"dependency: {how}", change, expect="did you mean" if how == "near" else "")


def ids_differing_in_case(rng: random.Random) -> Case:
    twin = rng.choice(["Build", "BUILD", "bUild"])
    return mutated(f"ids 'build' and {twin!r}", setter("tasks", twin, value={"cmd": f"touch {MARK}-twin"}))


def array_of_tasks(rng: random.Random) -> Case:
    def change(data: dict[str, Any]) -> None:
        tasks = data.pop("tasks")
        data["tasks"] = [{"id": tid, **body} for tid, body in tasks.items()][: rng.randint(1, 3)]
    return mutated("[[tasks]]", change)


def not_tables(rng: random.Random) -> Case:
    how = rng.choice(["run", "tasks", "task", "no tasks"])
    change = {"run": setter("run", value=5), "tasks": setter("tasks", value="build"),
              "task": setter("tasks", "make", value="os:mkdir"), "no tasks": setter("tasks", value={})}[how]
    return mutated(f"not a table: {how}", change)


def valid_text() -> str:
    return tomli_w.dumps(valid_tasks())


def broken_toml(rng: random.Random) -> Case:
    text = valid_text()
    lines = text.splitlines(keepends=True)
    how = rng.choice(["unclosed string", "junk line", "table twice", "key twice", "unclosed array",
                      "bad escape", "truncated"])
    if how == "unclosed string":
        at = rng.choice([i for i, line in enumerate(lines) if line.rstrip().endswith('"')])
        lines[at] = lines[at].rstrip()[:-1] + "\n"
    elif how == "junk line":
        lines.insert(rng.randint(0, len(lines)), rng.choice(["= = =\n", "a b = 1\n", "[tasks.\n", "x = \n"]))
    elif how == "table twice":
        lines.append('\n[tasks.build]\ncmd = "again"\n')
    elif how == "key twice":
        at = lines.index("[tasks.build]\n")
        lines.insert(at + 1, 'cmd = "dup"\n')
    elif how == "unclosed array":
        lines.append('\n[tasks.extra]\ncmd = "x"\nwrites = ["a",\n')
    elif how == "bad escape":
        lines.append('\n[tasks.extra]\ncmd = "a\\qb"\n')
    else:  # cut inside a quoted value (each holds 3 characters or more): never valid
        at = rng.choice([m.end() for m in re.finditer('= "', text)])
        lines = [text[: at + rng.randint(0, 2)]]
    return Case(f"broken TOML: {how}", raw="".join(lines).encode())


def invalid_utf8(rng: random.Random) -> Case:
    body = valid_text().encode()
    bad = rng.choice([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])
    at = rng.randint(0, len(body))
    return Case(f"invalid UTF-8 {bad!r}", raw=body[:at] + bad + body[at:])


def empty_file(rng: random.Random) -> Case:
    body = rng.choice([b"", b"\n", b"# only a comment\n", b"[run]\nmax_parallel = 2\n"])
    return Case(f"empty file {body!r}", raw=body)


def symlink_out(rng: random.Random) -> Case:
    """The repository holds `esc`, a symlink to a folder outside it."""
    how = rng.choice(["writes", "reads", "cwd", "glob", "include"])
    change = {"writes": setter("tasks", "build", "writes", value=["esc/x"]),
              "reads": setter("tasks", "check", "reads", value=["esc"]),
              "cwd": setter("tasks", "build", "cwd", value="esc"),
              "glob": setter("tasks", "build", "writes", value=["esc/*.txt"]),
              "include": setter("run", "worktree_include", value=["esc"])}[how]
    return mutated(f"through the esc symlink: {how}", change, in_repo=True)


MUTATIONS: list[Callable[[random.Random], Case]] = [
    nul_in_a_string, nul_in_a_key, bad_env_name, wrong_task_field, wrong_setting, unknown_key,
    bad_task_id, climbing_path, include_outside, bad_dependency, ids_differing_in_case, array_of_tasks,
    not_tables, broken_toml, invalid_utf8, empty_file, symlink_out,
]
WEIGHTS = [6, 2, 2, 8, 6, 3, 3, 4, 1, 2, 1, 1, 1, 3, 2, 1, 2]
SPECIAL = [Case("a directory", special="dir"), Case("a FIFO", special="fifo")]


def listed_cases(rng: random.Random) -> list[Case]:
    """Every value the tables above list: each bad value of each field and setting, each bad id,
    each climbing path in each path field, a NUL in each string."""
    return [
        *(task_field(key, value) for key, values in {**BAD_FIELD_VALUES, **BAD_CALL_VALUES}.items()
          for value in values),
        *(setting(key, value) for key, values in BAD_SETTINGS.items() for value in values),
        *(task_id(tid) for tid in BAD_IDS),
        *(climbing(key, [path]) for key in ("writes", "reads", "worktree_include") for path in CLIMBING),
        *(nul_at(rng, where) for where in [*STRING_PLACES, *(where for where, _ in NEW_STRINGS)]),
    ]


def generated_cases() -> list[Case]:
    """Each kind of mutation once, every listed value, then more mutations at random: all from SEED."""
    rng = random.Random(SEED)
    cases = [make(rng) for make in MUTATIONS] + listed_cases(rng)
    while len(cases) < MIN_CASES:
        cases.append(rng.choices(MUTATIONS, WEIGHTS)[0](rng))
    return cases


CASES = generated_cases()
# the sample given to a real `run`: spread over the list, so every kind of mutation is likely in it
RUN_CASES = [*CASES[:: len(CASES) // RUN_SAMPLE][:RUN_SAMPLE], *SPECIAL]
# cases that once crashed a run: each also shown alone, through a real `run` (see the last test)
WORKTREE_INCLUDE_NOT_A_LIST = (
    "a [run] worktree_include that is neither a list nor a string (a number, a boolean) is iterated "
    "before it is validated (inputs/settings.py, _layer): a TypeError traceback, 'internal error', exit 1")
RESOURCE_NAME_UNCHECKED = (
    "a task's resource name outside [A-Za-z0-9][A-Za-z0-9_.-]{0,63} ('', 'a b', '-x', 'a/b') passes "
    "validation (inputs/taskfile.py, _resources): plan exits 0, and run crashes as it starts "
    "(ValueError from locking/table.py LockRequest): a traceback, 'internal error', exit 1, a crashed run")
FORMER_BUGS: list[tuple[Case, str]] = [
    *((setting("worktree_include", value), WORKTREE_INCLUDE_NOT_A_LIST) for value in (5, True, 1.5)),
    *((task_field("resources", value), RESOURCE_NAME_UNCHECKED)
      for value in ({"": 1}, ["a b"], ["-x"], {"a/b": 1})),
]
KNOWN_BUGS: dict[str, str] = {}  # bugs found and not fixed yet: kept out of the sweeps, by name


# ---------------------------------------------------------------- where cases are written


@pytest.fixture
def places(tmp_path: Path) -> dict[bool, Path]:
    """Where a case's file goes: a folder outside git (False), or a repository (True) that holds
    `esc`, a symlink to a folder outside it. Both have the `src` folder the valid file's cwd names."""
    plain, outside = tmp_path / "plain", tmp_path / "outside"
    repo = make_repo(tmp_path / "repo", {"src/a.txt": "a\n", ".gitignore": "ran-*\ncase-*\n"})
    for folder in (plain / "src", outside):
        folder.mkdir(parents=True)
    (repo / "esc").symlink_to(outside)
    return {False: plain, True: repo}


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`main` called here sees no NOVA_* of the caller, and a private state dir."""
    for var in [v for v in os.environ if v.startswith("NOVA_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("NOVA_STATE_DIR", str(tmp_path / "state"))


def refusal_problem(case: Case, code: int, err: str, mark: str) -> str | None:
    """What is wrong with how a command ended on `case`, or None: exit 2, one line on stderr
    that starts "novaproc: error:", no traceback, no marker file."""
    lines = err.splitlines()
    if code != 2:
        return f"exit {code}"
    if "Traceback" in err:
        return "a traceback"
    if len(lines) != 1 or not lines[0].startswith("novaproc: error:"):
        return f"stderr is not one error line: {lines!r}"
    if case.expect and case.expect not in err:
        return f"no {case.expect!r} in {err!r}"
    if ran := sorted(Path(mark).parent.glob(Path(mark).name + "-*")):
        return f"tasks ran: {ran}"
    return None


def report(problems: list[str]) -> str:
    return f"{len(problems)} bad inputs not refused as they should be:\n" + "\n".join(problems)


def sweep(cases: list[Case]) -> Iterator[tuple[int, Case]]:
    return ((i, c) for i, c in enumerate(cases) if c.name not in KNOWN_BUGS)


# ---------------------------------------------------------------- the tests


def test_the_valid_file_is_valid_and_its_tasks_leave_their_marks(places):
    """What the fuzz mutates runs: each of its tasks creates its marker file (so a case whose
    marker is missing really ran nothing)."""
    case = Case("valid", data=valid_tasks())
    path, _ = case.write(places[False], 0)
    proc = run_cli("run", path, cwd=path.parent, env={"NOVA_STATE_DIR": str(path.parent / "state")})
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in path.parent.glob("ran-0-*")) == ["ran-0-build", "ran-0-check", "ran-0-make"]


def test_an_absolute_path_outside_the_repository_is_valid(places, in_process, capsys):
    """Absolute paths name shared files outside the repository: allowed in writes and reads."""
    data = valid_tasks()
    data["tasks"]["build"]["writes"] = ["/tmp/novaproc-shared.db", "out/"]
    data["tasks"]["check"]["reads"] = ["/etc/hosts"]
    for in_repo in (False, True):
        path, _ = Case("absolute", data=data).write(places[in_repo], 0)
        assert main(["plan", str(path)]) == 0, capsys.readouterr().err


def test_plan_refuses_every_bad_input_with_one_line(places, in_process, capsys):
    """Every generated case, `plan` called in this process."""
    assert len(CASES) >= 300
    problems = []
    for i, case in sweep(CASES):
        path, mark = case.write(places[case.in_repo], i)
        try:
            code = main(["plan", str(path)])
        except (Exception, SystemExit) as e:  # one out of main is a bug to report, not a crash
            code = f"raised {e!r}"
        err = capsys.readouterr().err
        if problem := refusal_problem(case, code, err, mark):
            problems.append(f"#{i} {case.name}: {problem}\n    {path.read_bytes()[:300]!r}\n    {err}")
    assert not problems, report(problems)


def test_run_refuses_bad_input_and_runs_nothing(places, tmp_path):
    """A real `novaproc run` (and `plan`) on a sample of the cases and on special files (a FIFO
    would hang a reading): exit 2 and nothing ran."""
    jobs = []
    for n, case in enumerate(RUN_CASES):
        if case.name in KNOWN_BUGS:
            continue
        path, mark = case.write(places[case.in_repo], 1000 + n)
        for command in ("run", "plan") if case.special else ("run",):
            jobs.append((case, command, path, mark))

    def attempt(job: tuple[Case, str, Path, str]) -> str | None:
        case, command, path, mark = job
        try:
            proc = run_cli(command, path, cwd=path.parent, timeout=HANG,
                           env={"NOVA_STATE_DIR": str(tmp_path / "state")})
        except subprocess.TimeoutExpired:
            return f"{command} {case.name}: no answer within {HANG} s"
        problem = refusal_problem(case, proc.returncode, proc.stderr, mark)
        return problem and f"{command} {case.name}: {problem}\n    {proc.stderr}"

    with ThreadPoolExecutor(4) as pool:
        problems = [p for p in pool.map(attempt, jobs) if p]
    assert not problems, report(problems)



@pytest.mark.parametrize("case", [pytest.param(case, id=case.name) for case, _ in FORMER_BUGS])
def test_an_input_that_once_crashed_a_run_is_refused(case, places, tmp_path):
    """Each case that exposed a bug (see FORMER_BUGS for what it did), alone, through a real `run`."""
    path, mark = case.write(places[case.in_repo], 0)
    proc = run_cli("run", path, cwd=path.parent, timeout=HANG,
                   env={"NOVA_STATE_DIR": str(tmp_path / "state")})
    assert refusal_problem(case, proc.returncode, proc.stderr, mark) is None, proc.stderr
