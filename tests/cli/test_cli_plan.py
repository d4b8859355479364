"""`novaproc plan` and `novaproc init` end to end: the real CLI in a subprocess, real files."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.cli import run_cli
from support.repo import make_repo
from support.tasks import write_tasks

from novaproc.cli.version import VERSION
from novaproc.inputs import taskfile
from novaproc.inputs.settings import Settings, load_settings
from novaproc.inputs.taskfile import load_tasks

# ---- bad input: one message naming file, task and field; exit 2; never a traceback --------

TWO_TASKS = '[tasks.build]\ncmd = "make"\n[tasks.test]\ncmd = "make test"\ndepends_on = ["build"]\n'


def _make_dir(tmp_path: Path) -> Path:
    (tmp_path / "adir").mkdir()
    return tmp_path / "adir"


def _unreadable(tmp_path: Path) -> Path:
    path = write_tasks(tmp_path, TWO_TASKS)
    path.chmod(0)
    return path


def _too_big(tmp_path: Path) -> Path:
    path = tmp_path / "tasks.toml"
    with path.open("wb") as f:
        f.write(b'[tasks.a]\ncmd = "x"\n')
        f.write(b"#" + b"x" * taskfile.MAX_FILE_BYTES + b"\n")
    return path


@dataclass(frozen=True)
class Bad:
    """One bad input. `tasks` is the tasks file's text (or bytes); `expect` are regexes that must
    all be found in stderr; the path of the file at fault (nova.toml when `nova` is given, else
    the tasks file) must be in stderr unless `names_file` is False."""

    id: str
    tasks: str | bytes | None
    expect: tuple[str, ...]
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    nova: str | None = None
    make: Callable[[Path], Path] | None = None  # builds the file to plan instead of `tasks`
    names_file: bool = True


def _task_a(body: str) -> str:
    return f'[tasks.a]\ncmd = "make"\n{body}\n'


BAD_CASES = [
    Bad("missing-file", None, (r"no such file|not found|does not exist",)),
    Bad("unreadable-file", None, (r"permission|cannot be read|unreadable",), make=_unreadable),
    Bad("directory", None, (r"directory",), make=_make_dir),
    Bad("toml-syntax", '[tasks.a]\ncmd = = "x"\n', (r"line 2", r"column \d+")),
    Bad("unknown-task-key", _task_a("depend_on = []"),
        (r"'a'", r"depend_on", r'did you mean "depends_on"')),
    Bad("unknown-top-level-key", '[task.a]\ncmd = "x"\n', (r"'task'", r'did you mean "tasks"')),
    Bad("wrong-type-retries", _task_a('retries = "three"'), (r"'a'", r"retries", r"integer|whole number")),
    Bad("wrong-type-cmd", '[tasks.a]\ncmd = 5\n', (r"'a'", r"'cmd'", r"string")),
    Bad("wrong-type-depends-on", _task_a('depends_on = "b"'), (r"'a'", r"depends_on", r"list|tuple")),
    Bad("both-cmd-and-call", _task_a('call = "m:f"'), (r"'a'", r"\bcmd\b", r"\bcall\b", r"both|exactly one")),
    Bad("neither-cmd-nor-call", '[tasks.a]\ndescription = "x"\n',
        (r"'a'", r"\bcmd\b", r"\bcall\b", r"neither|exactly one")),
    Bad("id-climbing", '[tasks."../x"]\ncmd = "x"\n', (re.escape("'../x'"), r"letters")),
    Bad("id-leading-dash", '[tasks.-x]\ncmd = "x"\n', (r"'-x'", r"letters")),
    Bad("id-with-space", '[tasks."a b"]\ncmd = "x"\n', (r"'a b'", r"letters")),
    Bad("id-65-chars", f'[tasks.{"x" * 65}]\ncmd = "x"\n', ("x" * 65, r"64")),
    Bad("id-dot-lock", '[tasks."x.lock"]\ncmd = "x"\n', (r"'x\.lock'", r"\.lock")),
    Bad("ids-differ-in-case", '[tasks.Build]\ncmd = "x"\n[tasks.build]\ncmd = "y"\n',
        (r"'Build'", r"'build'", r"case")),
    Bad("unknown-dependency", TWO_TASKS.replace('["build"]', '["biuld"]'),
        (r"'test'", r"depends_on", r"biuld", r'did you mean "build"')),
    Bad("cycle", '[tasks.a]\ncmd = "x"\ndepends_on = ["b"]\n[tasks.b]\ncmd = "x"\ndepends_on = ["a"]\n',
        (r"cycle", r"a -> b -> a|b -> a -> b", r"depends_on")),
    Bad("cycle-of-three", '[tasks.a]\ncmd = "x"\ndepends_on = ["b"]\n[tasks.b]\ncmd = "x"\n'
        'depends_on = ["c"]\n[tasks.c]\ncmd = "x"\ndepends_on = ["a"]\n',
        (r"a -> b -> c -> a|b -> c -> a -> b|c -> a -> b -> c",)),
    Bad("self-loop", _task_a('depends_on = ["a"]'), (r"cycle", r"a -> a")),
    Bad("writes-climbs-out", _task_a('writes = ["src", "../outside.txt"]'),
        (r"'a'", r"writes", re.escape("../outside.txt"))),
    Bad("reads-climbs-out", _task_a('reads = ["docs/../../secret"]'),
        (r"'a'", r"reads", re.escape("docs/../../secret"))),
    Bad("cwd-climbs-out", _task_a('cwd = "../elsewhere"'), (r"'a'", r"cwd")),
    Bad("bad-duration", _task_a('timeout = "ten minutes"'),
        (r"'a'", r"timeout", r"ten minutes", r"90s|10m|1h30m")),
    Bad("unknown-kind", _task_a('kind = "databse"'), (r"'a'", r"kind", r"databse", r"database")),
    Bad("non-utf8", b'[tasks.a]\ncmd = "caf\xe9"\n', (r"UTF-8|utf-8|encoding",)),
    Bad("deep-nesting", "x = " + "[" * 5000 + "]" * 5000 + "\n", (r"nest|deep",)),
    Bad("over-size-cap", None, (r"larger|too (big|large)|size|MiB",), make=_too_big),
    Bad("no-tasks", "[run]\nmax_parallel = 2\n", (r"tasks",)),
    Bad("nova-toml-bad-value", TWO_TASKS, (r"max_parallel", r"four"), nova='max_parallel = "four"\n'),
    Bad("nova-toml-unknown-key", TWO_TASKS, (r'did you mean "max_parallel"',),
        nova="max_paralel = 3\n"),
    Bad("run-table-bad-value", "[run]\nmax_parallel = 0\n" + TWO_TASKS, (r"\[run\]", r"max_parallel")),
    Bad("env-not-a-number", TWO_TASKS, (r"NOVA_MAX_PARALLEL", r"abc"), env={"NOVA_MAX_PARALLEL": "abc"},
        names_file=False),
    Bad("env-zero", TWO_TASKS, (r"NOVA_MAX_PARALLEL",), env={"NOVA_MAX_PARALLEL": "0"}, names_file=False),
    Bad("unknown-only-id", TWO_TASKS, (r"--only", r"biuld", r'did you mean "build"'),
        args=("--only", "biuld"), names_file=False),
    Bad("bad-max-parallel-flag", TWO_TASKS, (r"max-parallel",), args=("--max-parallel", "0"),
        names_file=False),
]


@pytest.mark.parametrize("case", BAD_CASES, ids=[c.id for c in BAD_CASES])
def test_bad_input_exits_2_with_one_clear_message(tmp_path, case):
    if case.id == "unreadable-file" and os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    target = tmp_path / "tasks.toml"
    if case.make is not None:
        target = case.make(tmp_path)
    elif isinstance(case.tasks, bytes):
        target.write_bytes(case.tasks)
    elif case.tasks is not None:
        write_tasks(tmp_path, case.tasks)
    if case.nova is not None:
        (tmp_path / "nova.toml").write_text(case.nova)
    result = run_cli("plan", target, *case.args, cwd=tmp_path, env=case.env)
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.strip(), "no message at all"
    if case.names_file:
        assert str(tmp_path / "nova.toml" if case.nova else target) in result.stderr
    for pattern in case.expect:
        assert re.search(pattern, result.stderr), f"{pattern!r} not in {result.stderr!r}"


def test_unknown_command_is_bad_usage(tmp_path):
    result = run_cli("plna", "tasks.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "plna" in result.stderr


# ---- plan output -----------------------------------------------------------------------------


def plan_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [line.strip() for line in result.stdout.splitlines()]


def test_plan_text_for_independent_tasks(tmp_path):
    path = write_tasks(tmp_path, """
        [tasks.fix_auth]
        description = "fix test_auth.py"
        cmd = "python fix.py auth"
        writes = ["tests/test_auth.py"]
        [tasks.fix_db]
        cmd = "python fix.py db"
        writes = ["tests/test_db.py"]
        [tasks.fix_api]
        cmd = "python fix.py api"
        writes = ["tests/test_api.py"]
    """)
    lines = plan_lines(run_cli("plan", path, cwd=tmp_path))
    assert "Execution strategy: simple_parallel" in lines
    assert "Reason: 3 independent tasks - safe for parallel execution" in lines
    assert "Safety level: SAFE" in lines
    assert any(re.fullmatch(r"Estimated speedup: 3(\.0+)?x\s+\(4 slots\)", line) for line in lines), lines
    assert "Tasks (3):" in lines
    numbered = [line for line in lines if re.match(r"\d+\. ", line)]
    assert [line.split()[1] for line in numbered] == ["fix_auth", "fix_db", "fix_api"]
    assert "fix test_auth.py" in numbered[0]
    assert not any(line.startswith("Conflicts") for line in lines)


def test_plan_text_shows_layers_of_a_dag(tmp_path):
    path = write_tasks(tmp_path, """
        [tasks.implement]
        description = "implement feature"
        cmd = "python implement.py"
        writes = ["src/feature/"]
        [tasks.tests]
        description = "add tests"
        cmd = ["python", "-m", "pytest"]
        depends_on = ["implement"]
        writes = ["tests/feature/"]
        [tasks.lint]
        cmd = "ruff check"
        writes = ["lint.log"]
    """)
    lines = plan_lines(run_cli("plan", path, cwd=tmp_path))
    assert "Execution strategy: dag" in lines
    layer1 = next(line for line in lines if line.startswith("Layer 1:"))
    layer2 = next(line for line in lines if line.startswith("Layer 2:"))
    assert "implement feature" in layer1
    assert "add tests" not in layer1
    assert "add tests" in layer2
    assert "depends on layer 1" in layer2


def test_plan_text_names_conflicts_and_forced_sequential(tmp_path):
    path = write_tasks(tmp_path, """
        [tasks.fix_login]
        cmd = "python fix.py login"
        writes = ["auth.py"]
        [tasks.refactor]
        cmd = "python refactor.py"
        writes = ["auth.py"]
    """)
    lines = plan_lines(run_cli("plan", path, cwd=tmp_path))
    assert "Execution strategy: sequential" in lines
    assert "Reason: Both tasks modify auth.py" in lines
    assert "Safety level: SAFE (forced sequential)" in lines
    start = next(i for i, line in enumerate(lines) if line.startswith("Conflicts"))
    listed = " ".join(lines[start:])
    assert "fix_login" in listed
    assert "refactor" in listed
    assert "auth.py" in listed


def test_plan_text_detects_git_tasks(tmp_path):
    path = write_tasks(tmp_path, """
        [tasks.commit]
        cmd = "git commit -am 'update'"
        writes = ["a"]
        [tasks.push]
        cmd = ["git", "push", "origin", "main"]
        writes = ["b"]
    """)
    lines = plan_lines(run_cli("plan", path, cwd=tmp_path))
    assert "Execution strategy: sequential" in lines
    assert "Reason: Contains git operations" in lines


PLAN_JSON_TASKS = """
    [tasks.gen]
    cmd = "python gen.py"
    writes = ["src/"]
    [tasks.fix]
    description = "fix auth"
    cmd = "python fix.py"
    writes = ["src/auth.py"]
    [tasks.test]
    cmd = ["python", "-m", "pytest"]
    depends_on = ["gen"]
    reads = ["tests/"]
    writes = ["reports/"]
    [tasks.commit]
    cmd = "git commit -am wip"
    writes = ["CHANGELOG"]
    [tasks.push]
    cmd = "git -C . push"
    writes = ["VERSION"]
"""


def test_plan_json(tmp_path):
    path = write_tasks(tmp_path, PLAN_JSON_TASKS)
    result = run_cli("plan", "--json", path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {"strategy", "reason", "safety", "estimated_speedup", "slots", "layers", "conflicts",
            "tasks"} <= set(data)
    assert data["strategy"] == "dag"
    assert isinstance(data["reason"], str)
    assert data["reason"]
    assert data["safety"] == "SAFE"
    assert data["slots"] == 4
    assert data["estimated_speedup"] == pytest.approx(2.5, abs=0.01)  # 5 units of work in 2
    assert [set(layer) for layer in data["layers"]] == [{"gen", "commit"}, {"fix", "test", "push"}]
    conflicts = {tuple(c["tasks"]): c["paths"] for c in data["conflicts"]}
    assert conflicts == {("gen", "fix"): ["src/auth.py"], ("commit", "push"): []}
    tasks = {t["id"]: t for t in data["tasks"]}
    assert list(tasks) == ["gen", "fix", "test", "commit", "push"]
    assert {tid: t["kind"] for tid, t in tasks.items()} == {
        "gen": "normal", "fix": "normal", "test": "normal", "commit": "git", "push": "git"}
    assert {tid: t["after"] for tid, t in tasks.items()} == {
        "gen": [], "fix": ["gen"], "test": [], "commit": [], "push": ["commit"]}


def test_plan_json_warns_about_tasks_without_writes_running_in_place(tmp_path):
    path = write_tasks(tmp_path, '[tasks.a]\ncmd = "x"\n[tasks.b]\ncmd = "y"\nwrites = ["b"]\n'
                                 '[run]\nisolation = "none"\n')
    data = json.loads(run_cli("plan", "--json", path, cwd=tmp_path).stdout)
    assert data["safety"] != "SAFE"
    assert "warn" in data["safety"].lower()


def test_plan_only_keeps_the_named_tasks_and_their_dependencies(tmp_path):
    path = write_tasks(tmp_path, TWO_TASKS + '[tasks.docs]\ncmd = "make docs"\n')
    result = run_cli("plan", "--json", path, "--only", "test", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [t["id"] for t in json.loads(result.stdout)["tasks"]] == ["build", "test"]


def test_plan_of_a_file_in_a_git_repository_from_another_folder(tmp_path):
    repo = tmp_path / "repo"
    make_repo(repo, commit=False)
    path = write_tasks(repo / "jobs", '[tasks.a]\ncmd = "x"\nwrites = ["src/./a.py"]\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli("plan", "--json", path, cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["tasks"][0]["writes"] == ["src/a.py"]  # relative to the repository root


# ---- settings through the CLI ------------------------------------------------------------------


@pytest.mark.parametrize(("levels", "expected"), [
    ((), 4),
    (("nova",), 2),
    (("nova", "run"), 3),
    (("nova", "run", "env"), 5),
    (("nova", "run", "env", "flag"), 6),
    (("run", "flag"), 6),
    (("nova", "env"), 5),
])
def test_slots_precedence_through_the_cli(tmp_path, levels, expected):
    text = TWO_TASKS.replace('[tasks.build]', '[tasks.other]\ncmd = "z"\n[tasks.build]')
    if "run" in levels:
        text = "[run]\nmax_parallel = 3\n" + text
    path = write_tasks(tmp_path, text)
    if "nova" in levels:
        (tmp_path / "nova.toml").write_text("max_parallel = 2\n")
    env = {"NOVA_MAX_PARALLEL": "5"} if "env" in levels else {}
    flags = ("--max-parallel", "6") if "flag" in levels else ()
    result = run_cli("plan", "--json", path, *flags, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["slots"] == expected


def test_config_flag_points_to_another_settings_file(tmp_path):
    path = write_tasks(tmp_path, TWO_TASKS)
    (tmp_path / "nova.toml").write_text("max_parallel = 2\n")
    other = tmp_path / "ci" / "nova-ci.toml"
    other.parent.mkdir()
    other.write_text("max_parallel = 7\n")
    result = run_cli("plan", "--json", path, "--config", other, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["slots"] == 7
    bad = run_cli("plan", path, "--config", tmp_path / "missing.toml", cwd=tmp_path)
    assert bad.returncode == 2
    assert "missing.toml" in bad.stderr


# ---- init ------------------------------------------------------------------------------------


def test_init_writes_files_that_load_and_plan(tmp_path):
    result = run_cli("init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    loaded = load_tasks(tmp_path / "tasks.toml")
    assert loaded.tasks
    assert all(t.cmd or t.call for t in loaded.tasks)
    load_settings(tmp_path, loaded.run_table, environ={})
    planned = run_cli("plan", "--json", tmp_path / "tasks.toml", cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    assert [t["id"] for t in json.loads(planned.stdout)["tasks"]] == [t.id for t in loaded.tasks]


def test_inits_nova_toml_explains_each_setting_and_holds_the_defaults(tmp_path):
    assert run_cli("init", cwd=tmp_path).returncode == 0
    lines = (tmp_path / "nova.toml").read_text().splitlines()
    settings = load_settings(tmp_path, environ={})
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith(("#", "[", "docker")):
            key = line.split("=")[0].strip()
            above = next(ln for ln in reversed(lines[:i]) if not re.match(r"\w+ = ", ln))
            assert above.startswith("#"), f"{key} has no comment above its block"
            assert getattr(settings, key) == getattr(Settings(), key), key
    assert "novaproc sources" not in "\n".join(lines)  # nothing to look up elsewhere


def test_init_into_a_named_folder(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    assert run_cli("init", folder, cwd=tmp_path).returncode == 0
    assert (folder / "nova.toml").is_file()
    assert (folder / "tasks.toml").is_file()
    assert not (tmp_path / "tasks.toml").exists()


def test_init_refuses_to_overwrite_unless_forced(tmp_path):
    assert run_cli("init", cwd=tmp_path).returncode == 0
    starter = (tmp_path / "tasks.toml").read_text()
    write_tasks(tmp_path, "# mine\n")
    refused = run_cli("init", cwd=tmp_path)
    assert refused.returncode == 2
    assert "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (tmp_path / "tasks.toml").read_text() == "# mine\n"
    forced = run_cli("init", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "tasks.toml").read_text() == starter


def test_init_with_one_file_present_writes_neither(tmp_path):
    (tmp_path / "nova.toml").write_text("max_parallel = 2\n")
    refused = run_cli("init", cwd=tmp_path)
    assert refused.returncode == 2
    assert "nova.toml" in refused.stderr
    assert not (tmp_path / "tasks.toml").exists()
    assert (tmp_path / "nova.toml").read_text() == "max_parallel = 2\n"


# ---- help and version ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", [(), ("plan",), ("init",)])
def test_help(tmp_path, command):
    result = run_cli(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "usage:" in result.stdout
    assert result.stderr == ""


def test_version(tmp_path):
    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.strip() == f"novaproc {VERSION}"


def test_plan_json_into_a_closed_pipe_is_not_a_traceback(tmp_path):
    # a reader that went away (`novaproc plan --json big.toml | head -c0`) is not a novaproc bug
    path = write_tasks(tmp_path, "".join(f'[tasks.t{i}]\ncmd = "echo {i}"\nwrites = ["f{i}"]\n'
                                         for i in range(300)))
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = run_cli("plan", "--json", path, cwd=tmp_path, stdout=write_end, timeout=60)
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr
    assert result.returncode == 0
