"""What derives from a tasks file's tasks alone (the plan's graph and conflicts), kept beside
its entry in the input cache from the second reading on: made once, keyed also by the code
that derives it, never for tasks a glob decides, never unpickled from a file others could write."""

from __future__ import annotations

import json
from pathlib import Path

from support.cli import run_cli
from support.tasks import write_tasks

from novaproc.inputs.cache import load_inputs, remember

TASKS = """
[tasks.gen]
cmd = "gen"
writes = ["src"]
[tasks.fix]
cmd = "fix"
writes = ["src/a.py"]
[tasks.test]
cmd = "test"
depends_on = ["fix"]
reads = ["src"]
"""


def env_of(tmp_path: Path) -> dict[str, str]:
    return {"XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path)}


class Maker:
    """A `make` that counts its calls."""

    def __init__(self, value: object) -> None:
        self.value, self.calls = value, 0

    def __call__(self) -> object:
        self.calls += 1
        return self.value


def test_it_is_kept_from_the_second_reading_on_and_made_once(tmp_path: Path) -> None:
    path, env, code = write_tasks(tmp_path, TASKS), env_of(tmp_path), [Path(__file__)]
    make = Maker({"edges": [("gen", "fix")]})

    first = load_inputs(path, environ=env)[0]  # read afresh: nothing is kept beside it
    assert first.cache_entry is None and remember(first, "x", make, code=code) == make.value
    readings = [load_inputs(path, environ=env)[0] for _ in range(3)]
    assert all(r.cache_entry is not None for r in readings)
    assert [remember(r, "x", make, code=code) for r in readings] == [make.value] * 3
    assert make.calls == 2  # the first reading's, and the second's, which kept it


def test_a_change_to_the_code_that_derives_it_makes_it_again(tmp_path: Path) -> None:
    path, env = write_tasks(tmp_path, TASKS), env_of(tmp_path)
    deriving = tmp_path / "deriving.py"
    deriving.write_text("v = 1\n")
    load_inputs(path, environ=env)
    taskfile = load_inputs(path, environ=env)[0]
    remember(taskfile, "x", Maker(1), code=[deriving])

    deriving.write_text("v = 22\n")
    again = Maker(2)
    assert remember(taskfile, "x", again, code=[deriving]) == 2 and again.calls == 1
    assert remember(taskfile, "y", Maker(3), code=[deriving]) == 3  # another name, another value


def test_tasks_a_glob_decides_are_never_kept(tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("")
    path, env = write_tasks(tmp_path, '[tasks.t]\ncmd = "cat {item}"\nforeach = "*.txt"\n'), env_of(tmp_path)
    load_inputs(path, environ=env)
    again = load_inputs(path, environ=env)[0]
    assert again.cache_entry is None  # the next run's files may differ without the file changing


def test_a_kept_value_others_could_have_written_is_not_unpickled(tmp_path: Path) -> None:
    path, env = write_tasks(tmp_path, TASKS), env_of(tmp_path)
    load_inputs(path, environ=env)
    taskfile = load_inputs(path, environ=env)[0]
    assert taskfile.cache_entry is not None
    remember(taskfile, "x", Maker(1))
    kept = taskfile.cache_entry.with_suffix(".x.pickle")
    assert kept.is_file()
    kept.write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    kept.chmod(0o664)
    make = Maker(2)
    assert remember(taskfile, "x", make) == 2 and make.calls == 1
    assert not (tmp_path / "pwned").exists()


def test_the_plan_is_the_same_read_afresh_kept_and_from_what_was_kept(tmp_path: Path) -> None:
    path, env = write_tasks(tmp_path, TASKS), env_of(tmp_path)
    plans = [run_cli("plan", "--json", path, cwd=tmp_path, env=env) for _ in range(3)]
    assert all(p.returncode == 0 for p in plans), plans
    assert len(list((tmp_path / "cache").rglob("*.ordering.pickle"))) == 1
    first = json.loads(plans[0].stdout)
    edges = {tuple(c["tasks"]) for c in first["conflicts"]}
    assert edges == {("gen", "fix"), ("gen", "test"), ("fix", "test")}
    assert [json.loads(p.stdout) for p in plans[1:]] == [first, first]

    only = run_cli("plan", "--json", path, "--only", "test", cwd=tmp_path, env=env)  # not the file's graph
    assert only.returncode == 0, only.stderr
    assert [t["id"] for t in json.loads(only.stdout)["tasks"]] == ["fix", "test"]
