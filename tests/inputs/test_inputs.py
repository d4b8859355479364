"""The cache of validated inputs: a second reading of the same inputs skips TOML and
pydantic, and any change to what the result depends on is a miss."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.tasks import write_tasks

from novaproc.errors import ConfigError
from novaproc.inputs import cache
from novaproc.inputs.cache import MAX_ENTRIES, cache_dir, load_inputs
from novaproc.inputs.taskfile import load_tasks as cache_load_tasks

RICH = """
[run]
max_parallel = 3
resources = {db = 2}

[tasks.a]
cmd = ["echo", "a"]
writes = ["src/a.py", "docs/*.md"]
env = {X = "1"}
retries = 2
timeout = "1m"
kind = "git"

[tasks.b]
call = "tools.gen:run"
args = [1, "two", [3, 4], {k = 5}, 1979-05-27T07:32:00Z]
kwargs = {flag = true}
depends_on = ["a"]
resources = ["db"]
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment whose cache lies in this test's folder."""
    return {"XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path)}


def entries(env: dict[str, str]) -> list[Path]:
    folder = cache_dir(env)
    assert folder is not None
    return sorted(folder.glob("*.pickle")) if folder.is_dir() else []


def test_a_second_reading_gives_the_same_result_from_the_cache(tmp_path, env):
    path = write_tasks(tmp_path, RICH)
    first = load_inputs(path, flags={"fail_fast": True}, environ=env)
    assert len(entries(env)) == 1
    second = load_inputs(path, flags={"fail_fast": True}, environ=env)
    assert second == first
    assert second[0].tasks[1].args[4].year == 1979  # a TOML datetime survives
    assert second[1].fail_fast is True and second[1].max_parallel == 3


@pytest.mark.parametrize(("text", "on_a_hit"), [(RICH.replace('env = {X = "1"}\n', ""), []),
                                               (RICH, ["tomllib"])], ids=["no env", "env"])
def test_a_cached_reading_does_not_load_pydantic(tmp_path, env, text, on_a_hit):
    """Nor tomllib, unless the tasks have env values: those are read from the file again, since
    they may be secrets and never reach the cache (see the test below)."""
    path = write_tasks(tmp_path, text)
    probe = ("import sys; from pathlib import Path; from novaproc.inputs.cache import load_inputs; "
             f"load_inputs(Path({str(path)!r})); "
             "print(sorted(m for m in ('pydantic', 'tomllib') if m in sys.modules))")

    def loaded() -> list[str]:
        out = subprocess.run([sys.executable, "-c", probe], env={**os.environ, **env},
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out.replace("'", '"'))

    assert loaded() == ["pydantic", "tomllib"]
    assert loaded() == on_a_hit


def test_env_values_never_reach_the_cache_and_come_back_on_a_hit(tmp_path, env):
    path = write_tasks(tmp_path, '[tasks.a]\ncmd = "true"\nenv = {TOKEN = "s3cr3t-value", B = "2"}\n')
    first = load_inputs(path, environ=env)
    assert not any(b"s3cr3t-value" in entry.read_bytes() for entry in entries(env))
    assert len(entries(env)) == 1
    second = load_inputs(path, environ=env)
    assert second == first and second[0].tasks[0].env == {"TOKEN": "s3cr3t-value", "B": "2"}


@pytest.mark.parametrize("change", ["tasks", "nova.toml", "environment", "flags", "git"])
def test_a_change_to_what_the_result_depends_on_is_a_miss(tmp_path, env, change):
    path = write_tasks(tmp_path, '[tasks.a]\ncmd = "true"\nwrites = ["out"]\n')
    environ, flags = dict(env), {}
    before = load_inputs(path, environ=environ, flags=flags)
    if change == "tasks":
        path.write_text('[tasks.a]\ncmd = "false"\nwrites = ["out"]\n')
    elif change == "nova.toml":
        (tmp_path / "nova.toml").write_text("max_parallel = 7\n")
    elif change == "environment":
        environ["NOVA_MAX_PARALLEL"] = "7"
    elif change == "flags":
        flags = {"max_parallel": 7}
    else:
        (tmp_path / ".git").mkdir()
    after = load_inputs(path, environ=environ, flags=flags)
    assert after != before
    if change == "tasks":
        assert after[0].tasks[0].cmd == "false"
    elif change == "git":
        assert after[0].in_git and not before[0].in_git
    else:
        assert after[1].max_parallel == 7
    assert len(entries(env)) == 2


def test_an_invalid_file_is_never_cached(tmp_path, env):
    path = write_tasks(tmp_path, '[tasks.a]\ncmd = "true"\nretries = 101\n')
    for _ in range(2):
        with pytest.raises(ConfigError, match="retries"):
            load_inputs(path, environ=env)
    assert entries(env) == []


def test_bad_settings_are_never_cached(tmp_path, env):
    path = write_tasks(tmp_path, '[tasks.a]\ncmd = "true"\n')
    with pytest.raises(ConfigError, match="max_parallel"):
        load_inputs(path, environ=env, flags={"max_parallel": 100_000})
    assert entries(env) == []


def test_a_damaged_entry_is_read_again_and_replaced(tmp_path, env):
    path = write_tasks(tmp_path, RICH)
    good = load_inputs(path, environ=env)
    [entry] = entries(env)
    entry.write_bytes(b"not a pickle")
    assert load_inputs(path, environ=env) == good
    assert entry.read_bytes() != b"not a pickle"


def test_an_entry_written_for_other_task_fields_is_a_miss(tmp_path, env, monkeypatch):
    # tasks are kept as rows of values: rows of another layout of Task must not be misread
    path = write_tasks(tmp_path, RICH)
    good = load_inputs(path, environ=env)
    [entry] = entries(env)
    with monkeypatch.context() as m:
        m.setattr(cache, "_FIELDS", (*cache._FIELDS[1:], cache._FIELDS[0]))
        entry.unlink()
        load_inputs(path, environ=env)  # written in the other layout
    read = []
    monkeypatch.setattr(cache, "load_tasks", lambda *a: read.append(a) or cache_load_tasks(*a))
    assert load_inputs(path, environ=env) == good
    assert len(read) == 1  # a miss: read afresh
    assert load_inputs(path, environ=env) == good and len(read) == 1  # ... and stored again


def test_an_entry_others_could_have_written_is_not_unpickled(tmp_path, env):
    path = write_tasks(tmp_path, '[tasks.a]\ncmd = "true"\n')
    load_inputs(path, environ=env)
    [entry] = entries(env)
    # a pickle that would run code when loaded, in a file open to the group
    entry.write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    entry.chmod(0o664)
    loaded = load_inputs(path, environ=env)
    assert loaded[0].tasks[0].cmd == "true"
    assert not (tmp_path / "pwned").exists()


def test_an_unwritable_cache_is_no_cache(tmp_path, env):
    (tmp_path / "cache").write_text("a file where the folder would go")
    path = write_tasks(tmp_path, '[tasks.a]\ncmd = "true"\n')
    assert load_inputs(path, environ=env) == load_inputs(path, environ=env)


def test_without_a_home_nothing_is_cached(tmp_path):
    path = write_tasks(tmp_path, '[tasks.a]\ncmd = "true"\n')
    assert cache_dir({}) is None
    assert load_inputs(path, environ={})[0].tasks[0].cmd == "true"


def test_only_the_newest_entries_are_kept(tmp_path, env, monkeypatch):
    monkeypatch.setattr(cache, "MAX_ENTRIES", 3)
    for i in range(5):
        load_inputs(write_tasks(tmp_path, f'[tasks.a]\ncmd = "echo {i}"\n', f"t{i}.toml"), environ=env)
    assert len(entries(env)) == 3 < MAX_ENTRIES


def test_a_flag_not_given_is_the_same_key_as_no_flag(tmp_path, env):
    """`plan -j2` then `run -j2` (whose other flags are None) share one entry."""
    path = write_tasks(tmp_path, '[tasks.a]\ncmd = "true"\n')
    load_inputs(path, environ=env, flags={"max_parallel": 2})
    load_inputs(path, environ=env, flags={"max_parallel": 2, "fail_fast": None, "merge": None})
    assert len(entries(env)) == 1


def test_the_key_covers_every_module_beside_the_cache() -> None:
    folder = Path(cache.__file__).parent
    assert cache.code_files() == sorted(folder.glob("*.py"))
    assert Path(cache.__file__) in cache.code_files() and len(cache.code_files()) > 3


@pytest.mark.parametrize(("template", "filled_on_a_hit"), [
    ('foreach = ["x", "y"]', False),                      # the items are in the file: kept expanded
    ('foreach = ["x", "y"]\nenv = {V = "{item}"}', True),  # env values are never stored
    ('foreach = "*.txt"', True),                          # a glob's files change without the file
], ids=["list", "env", "glob"])
def test_a_template_is_kept_expanded_only_when_the_file_alone_decides_its_tasks(
        tmp_path, env, monkeypatch, template, filled_on_a_hit):
    from novaproc.inputs import fanout

    (tmp_path / "x.txt").write_text("")
    (tmp_path / "y.txt").write_text("")
    path = write_tasks(tmp_path, f'[tasks.t]\ncmd = "echo {{item}}"\n{template}\n')
    first = load_inputs(path, environ=env)
    filled = []
    real = fanout._filled
    monkeypatch.setattr(fanout, "_filled", lambda *a: filled.append(a[2].id) or real(*a))
    again = load_inputs(path, environ=env)
    assert again == first and len(again[0].tasks) == 2
    assert filled == (["t"] if filled_on_a_hit else [])
