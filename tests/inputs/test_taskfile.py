"""Loading tasks files into frozen Task models, path normalisation, and kind detection."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
from support.repo import make_repo
from support.tasks import write_tasks

from novaproc.errors import ConfigError
from novaproc.inputs import taskfile
from novaproc.inputs.kinds import Kind, detect
from novaproc.inputs.taskfile import load_tasks, parse_duration


def load_one(tmp_path: Path, body: str, tid: str = "a") -> taskfile.Task:
    loaded = load_tasks(write_tasks(tmp_path, f"[tasks.{tid}]\n{body}"))
    return loaded.by_id()[tid]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A real, empty git repository."""
    return make_repo(tmp_path / "repo", commit=False).resolve()


# ---- every field ------------------------------------------------------------------------


def test_defaults_of_a_minimal_task(tmp_path):
    t = load_one(tmp_path, 'cmd = "make"')
    assert t.id == "a"
    assert t.cmd == "make"
    assert t.call is None
    assert t.args == ()
    assert t.kwargs == {}
    assert t.label == "a"
    assert t.depends_on == ()
    assert t.writes == ()
    assert t.reads == ()
    assert t.resources == {}
    assert t.kind == Kind.NORMAL
    assert t.isolation is None
    assert t.timeout is None
    assert t.retries == 0
    assert t.env == {}
    assert t.cwd is None
    assert t.cpu == 1
    assert t.allow_failure is False


def test_cmd_as_argv_list(tmp_path):
    t = load_one(tmp_path, 'cmd = ["python", "-m", "pytest", "-q", "tests dir"]')
    assert t.cmd == ("python", "-m", "pytest", "-q", "tests dir")


def test_call_with_args_and_kwargs(tmp_path):
    t = load_one(tmp_path, 'call = "tools.docs:regenerate"\nargs = ["feature", 3]\n'
                           'kwargs = { verbose = true, depth = 2 }')
    assert t.cmd is None
    assert t.call == "tools.docs:regenerate"
    assert t.args == ("feature", 3)
    assert t.kwargs == {"verbose": True, "depth": 2}
    assert t.kind == Kind.NORMAL


def test_description_is_the_label(tmp_path):
    t = load_one(tmp_path, 'cmd = "make"\ndescription = "build it"')
    assert t.description == "build it"
    assert t.label == "build it"


def test_scalar_fields(tmp_path):
    t = load_one(tmp_path, 'cmd = "make"\nisolation = "none"\nretries = 2\ncpu = 3\n'
                           'allow_failure = true\nenv = { B = "2", A = "1" }\ncwd = "sub/./dir/"')
    assert t.isolation == "none"
    assert t.retries == 2
    assert t.cpu == 3
    assert t.allow_failure is True
    assert t.env == {"A": "1", "B": "2"}
    assert t.cwd == "sub/dir"


def test_isolation_worktree(tmp_path):
    assert load_one(tmp_path, 'cmd = "make"\nisolation = "worktree"').isolation == "worktree"


def test_depends_on_and_declared_order(tmp_path):
    loaded = load_tasks(write_tasks(tmp_path, """
        [tasks.zeta]
        cmd = "a"
        [tasks.alpha]
        cmd = "b"
        depends_on = ["zeta"]
        [tasks.mid]
        cmd = "c"
        depends_on = ["zeta", "alpha"]
    """))
    assert [t.id for t in loaded.tasks] == ["zeta", "alpha", "mid"]
    assert loaded.by_id()["mid"].depends_on == ("zeta", "alpha")


@pytest.mark.parametrize(("declared", "expected"), [
    ("90s", 90.0), ("10m", 600.0), ("1h30m", 5400.0), ("1h", 3600.0), ("1m30s", 90.0),
    (45, 45.0), (2.5, 2.5), ("1.5h", 5400.0),
])
def test_timeout_forms(tmp_path, declared, expected):
    value = f'"{declared}"' if isinstance(declared, str) else str(declared)
    t = load_one(tmp_path, f'cmd = "make"\ntimeout = {value}')
    assert t.timeout == pytest.approx(expected)


@pytest.mark.parametrize("bad", ['"ten minutes"', '"0s"', "0", "-5", "true", '"1h30"', '""', '"5 m"',
                                 "nan", "-inf"])
def test_bad_durations_are_config_errors(tmp_path, bad):
    with pytest.raises(ConfigError) as info:
        load_one(tmp_path, f'cmd = "make"\ntimeout = {bad}')
    assert info.value.task == "a"
    assert info.value.field == "timeout"


@pytest.mark.parametrize("bad", ["", "abc", "1x", float("nan"), -1, True, None])
def test_parse_duration_rejects(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_resources_as_list_and_as_table(tmp_path):
    loaded = load_tasks(write_tasks(tmp_path, """
        [tasks.a]
        cmd = "x"
        resources = ["docker", "gpu"]
        [tasks.b]
        cmd = "x"
        resources = { docker = 2 }
    """))
    assert loaded.by_id()["a"].resources == {"docker": 1, "gpu": 1}
    assert loaded.by_id()["b"].resources == {"docker": 2}


@pytest.mark.parametrize("bad", ['"docker"', "[1]", "{ docker = 0 }", '{ docker = "1" }',
                                 "{ docker = true }"])
def test_bad_resources(tmp_path, bad):
    with pytest.raises(ConfigError) as info:
        load_one(tmp_path, f'cmd = "x"\nresources = {bad}')
    assert info.value.field == "resources"


# ---- paths ------------------------------------------------------------------------------


def test_paths_are_normalised_relative_to_the_repository(repo):
    sub = repo / "ci"
    sub.mkdir()
    loaded = load_tasks(write_tasks(sub, """
        [tasks.a]
        cmd = "x"
        writes = ["src/", "./docs/../docs/spec.md", "src/**/*.py", "*.md", "lib/mod[0-9].py"]
        reads = ["/var/cache/shared.db", "REPO/inside.txt"]
    """.replace("REPO", str(repo))))
    assert loaded.root == repo
    assert loaded.in_git is True
    t = loaded.by_id()["a"]
    # a glob counts as its fixed prefix; '*.md' has none, so it is the whole repository
    assert t.writes == ("src", "docs/spec.md", "src", ".", "lib")
    # absolute outside the repository: kept absolute; absolute inside: made relative
    assert t.reads == ("/var/cache/shared.db", "inside.txt")


def test_outside_git_the_root_is_the_tasks_files_folder(tmp_path):
    folder = tmp_path / "plain"
    loaded = load_tasks(write_tasks(folder, '[tasks.a]\ncmd = "x"\nwrites = ["out/x.txt"]'))
    assert loaded.in_git is False
    assert loaded.root == folder.resolve()
    assert loaded.path == (folder / "tasks.toml").resolve()


@pytest.mark.parametrize(("field", "declared"), [
    ("writes", "../outside.txt"), ("reads", "src/../../x"), ("writes", ".."), ("writes", "../*.py"),
])
def test_relative_paths_climbing_out_are_errors(repo, field, declared):
    path = write_tasks(repo, f'[tasks.a]\ncmd = "x"\n{field} = ["ok", "{declared}"]')
    with pytest.raises(ConfigError) as info:
        load_tasks(path)
    assert (info.value.task, info.value.field) == ("a", field)
    assert declared in str(info.value)


def test_cwd_climbing_out_is_a_config_error(repo):
    path = write_tasks(repo, '[tasks.a]\ncmd = "x"\ncwd = "../elsewhere"')
    with pytest.raises(ConfigError) as info:
        load_tasks(path)
    assert (info.value.task, info.value.field) == ("a", "cwd")


# ---- frozen models and the definition hash ------------------------------------------------


def test_models_are_frozen(tmp_path):
    loaded = load_tasks(write_tasks(tmp_path, '[tasks.a]\ncmd = "x"'))
    t = loaded.tasks[0]
    with pytest.raises(FrozenInstanceError):
        t.cmd = "rm -rf /"
    with pytest.raises(FrozenInstanceError):
        t.writes = ("other",)
    with pytest.raises(FrozenInstanceError):
        loaded.tasks = ()
    assert t.cmd == "x"


def test_definition_hash_is_stable_and_tracks_the_command(tmp_path):
    def hash_of(body: str, name: str) -> str:
        return load_tasks(write_tasks(tmp_path, f"[tasks.a]\n{body}", name)).tasks[0].definition_hash()

    base = hash_of('cmd = "make"\nwrites = ["out"]\nenv = { A = "1", B = "2" }', "one.toml")
    assert base == hash_of('cmd = "make"\nwrites = ["out"]\nenv = { A = "1", B = "2" }', "two.toml")
    assert base == hash_of('env = { B = "2", A = "1" }\nwrites = ["out"]\ncmd = "make"', "three.toml")
    assert base != hash_of('cmd = "make all"\nwrites = ["out"]\nenv = { A = "1", B = "2" }', "four.toml")
    assert base != hash_of('cmd = "make"\nwrites = ["out2"]\nenv = { A = "1", B = "2" }', "five.toml")
    assert base != hash_of('cmd = ["make"]\nwrites = ["out"]\nenv = { A = "1", B = "2" }', "six.toml")


def test_definition_hash_is_the_same_in_another_process(tmp_path):
    path = write_tasks(tmp_path, '[tasks.a]\ncall = "m:f"\nkwargs = { y = 1, x = [2] }\n'
                                 'env = { Z = "1", A = "2" }')
    here = load_tasks(path).tasks[0].definition_hash()
    code = ("from novaproc.inputs.taskfile import load_tasks\n"
            f"print(load_tasks({str(path)!r}).tasks[0].definition_hash())")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout.strip()
    assert there == here


# ---- kinds ------------------------------------------------------------------------------


@pytest.mark.parametrize(("cmd", "kind", "word"), [
    ("git commit -m 'x'", Kind.GIT, "commit"),
    ("git push origin main", Kind.GIT, "push"),
    ("git merge feature", Kind.GIT, "merge"),
    ("git rebase main", Kind.GIT, "rebase"),
    ("git tag v1.0", Kind.GIT, "tag"),
    ("git -C some/dir push", Kind.GIT, "push"),
    (["git", "commit", "-am", "message"], Kind.GIT, "commit"),
    ("cd app && alembic upgrade head", Kind.DATABASE, "alembic"),
    ("python manage.py migrate", Kind.DATABASE, "migrate"),
    ("flyway -url=jdbc:x migrate", Kind.DATABASE, "flyway"),
    ("liquibase update", Kind.DATABASE, "liquibase"),
    ("npx prisma migrate deploy", Kind.DATABASE, "prisma"),
    ("bundle exec rake db:migrate", Kind.DATABASE, "db:migrate"),
    ("psql -d app -f schema.sql", Kind.DATABASE, "psql"),
    ("mysql app < schema.sql", Kind.DATABASE, "mysql"),
    ("kubectl apply -f k8s/", Kind.DEPLOY, "kubectl"),
    ("helm upgrade app ./chart", Kind.DEPLOY, "helm"),
    ("terraform apply -auto-approve", Kind.DEPLOY, "terraform"),
    ("docker push registry.example/app:1", Kind.DEPLOY, "docker push"),
])
def test_detect_serial_kinds(cmd, kind, word):
    detected, reason = detect(cmd)
    assert detected == kind
    assert word in reason


@pytest.mark.parametrize("cmd", ["git status", "git log --oneline", "git diff", "echo migrate", "ls",
                                 "docker build .", "terraform plan", "kubectl get pods", "cat schema.sql",
                                 ["ls", "-l"]])
def test_detect_normal(cmd):
    detected, reason = detect(cmd)
    assert detected == Kind.NORMAL
    assert reason


def test_auto_kind_is_detected_on_load_and_explicit_kind_wins(tmp_path):
    loaded = load_tasks(write_tasks(tmp_path, """
        [tasks.push]
        cmd = "git push"
        [tasks.push_normal]
        cmd = "git push"
        kind = "normal"
        [tasks.ship]
        cmd = "echo shipping"
        kind = "deploy"
        [tasks.auto]
        cmd = "alembic upgrade head"
        kind = "auto"
    """))
    by_id = loaded.by_id()
    assert by_id["push"].kind == Kind.GIT
    assert "push" in by_id["push"].kind_reason
    assert by_id["push_normal"].kind == Kind.NORMAL
    assert by_id["ship"].kind == Kind.DEPLOY
    assert by_id["auto"].kind == Kind.DATABASE


# ---- bad input, in process: the error carries task and field ---------------------------


@pytest.mark.parametrize(("text", "task", "field"), [
    ('[tasks.a]\ncmd = "x"\ndepend_on = []', "a", "depend_on"),
    ('[tasks.a]\ncmd = "x"\ncall = "m:f"', "a", "cmd"),
    ('[tasks.a]\ndescription = "no command"', "a", "cmd"),
    ('[tasks.a]\ncmd = ""', "a", "cmd"),
    ('[tasks.a]\ncmd = []', "a", "cmd"),
    ('[tasks.a]\ncmd = 5', "a", "cmd"),
    ('[tasks.a]\ncmd = ["ls", 1]', "a", "cmd"),
    ('[tasks.a]\ncall = "not a target"', "a", "call"),
    ('[tasks.a]\ncmd = "x"\nargs = [1]', "a", "args"),
    ('[tasks.a]\ncmd = "x"\nretries = "three"', "a", "retries"),
    ('[tasks.a]\ncmd = "x"\nretries = -1', "a", "retries"),
    ('[tasks.a]\ncmd = "x"\ncpu = 0', "a", "cpu"),
    ('[tasks.a]\ncmd = "x"\nallow_failure = "yes"', "a", "allow_failure"),
    ('[tasks.a]\ncmd = "x"\nenv = { A = 1 }', "a", "env"),
    ('[tasks.a]\ncmd = "x"\ndepends_on = "b"\n[tasks.b]\ncmd = "y"', "a", "depends_on"),
    ('[tasks.a]\ncmd = "x"\nkind = "databse"', "a", "kind"),
    ('[tasks.a]\ncmd = "x"\nisolation = "docker"', "a", "isolation"),
    ('[tasks.a]\ncmd = "x"\nwrites = [1]', "a", "writes"),
    ('[tasks.build]\ncmd = "x"\n[tasks.test]\ncmd = "y"\ndepends_on = ["biuld"]', "test", "depends_on"),
])
def test_bad_task_fields_name_task_and_field(tmp_path, text, task, field):
    with pytest.raises(ConfigError) as info:
        load_tasks(write_tasks(tmp_path, text))
    assert (info.value.task, info.value.field) == (task, field)
    assert str(tmp_path / "tasks.toml") in str(info.value)


@pytest.mark.parametrize("tid", ["../x", "-x", "a b", "x" * 65, "x.lock", "_x", "a..b", "x.", ""])
def test_invalid_ids(tmp_path, tid):
    with pytest.raises(ConfigError) as info:
        load_tasks(write_tasks(tmp_path, f'[tasks."{tid}"]\ncmd = "x"'))
    assert info.value.task == tid


@pytest.mark.parametrize("tid", ["a", "A9", "x" * 64, "build.v2", "fix_auth-2", "9lives"])
def test_valid_ids(tmp_path, tid):
    assert load_tasks(write_tasks(tmp_path, f'[tasks."{tid}"]\ncmd = "x"')).tasks[0].id == tid


def test_ids_differing_only_in_case(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_tasks(write_tasks(tmp_path, '[tasks.Build]\ncmd = "x"\n[tasks.build]\ncmd = "y"'))
    assert "Build" in str(info.value)
    assert "build" in str(info.value)


def test_a_file_without_tasks(tmp_path):
    with pytest.raises(ConfigError):
        load_tasks(write_tasks(tmp_path, "[run]\nmax_parallel = 2\n"))


def test_the_size_cap_is_enforced_just_above_the_limit(tmp_path):
    path = tmp_path / "big.toml"
    head = b'[tasks.a]\ncmd = "x"\n#'
    path.write_bytes(head + b"x" * (taskfile.MAX_FILE_BYTES - len(head)))
    assert load_tasks(path).tasks[0].id == "a"  # exactly at the cap is fine
    path.write_bytes(head + b"x" * (taskfile.MAX_FILE_BYTES - len(head) + 1))
    with pytest.raises(ConfigError):
        load_tasks(path)
