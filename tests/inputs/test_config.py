"""Settings: defaults, and each layer overriding the one below it.

default < nova.toml (or --config) < [run] of the tasks file < NOVA_* environment < flags.
Every test passes `environ=` so the real environment never leaks in and is never changed.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from novaproc.errors import ConfigError
from novaproc.inputs.settings import DEFAULT_WORKTREE_DIR, Settings, load_settings, state_path_of

# one distinct value per level, so the winner identifies its level
LEVELS = ("nova", "run", "env", "flag")
MAX_PARALLEL = {"default": 4, "nova": 2, "run": 3, "env": 5, "flag": 6}


def settings_with(root: Path, levels: set[str], key: str = "max_parallel", values=MAX_PARALLEL,
                  env_var: str = "NOVA_MAX_PARALLEL") -> Settings:
    if "nova" in levels:
        (root / "nova.toml").write_text(f"{key} = {_toml(values['nova'])}\n")
    run_table = {key: values["run"]} if "run" in levels else {}
    environ = {env_var: str(values["env"])} if "env" in levels else {}
    flags = {key: values["flag"]} if "flag" in levels else {}
    return load_settings(root, run_table, environ=environ, flags=flags)


def _toml(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def test_defaults(tmp_path):
    s = load_settings(tmp_path, environ={})
    assert s.max_parallel == 4
    assert s.worktree_dir == DEFAULT_WORKTREE_DIR == "/tmp/nova-worktrees"
    assert s.state_dir is None
    assert s.state_path(tmp_path) == tmp_path / ".nova"
    assert s.isolation is None
    assert s.resolved_isolation(in_git=True) == "worktree"
    assert s.resolved_isolation(in_git=False) == "none"
    assert s.merge == "auto"
    assert s.target is None
    assert s.on_conflict == "rerun"
    assert s.verify is None
    assert s.cpu_limit == 90
    assert s.memory_limit == 90
    assert s.kill_grace == 5
    assert s.fail_fast is False
    assert s.undeclared_writes == "warn"
    assert s.worktree_setup is None
    assert s.worktree_include == ()
    assert s.resources == {}


@pytest.mark.parametrize("top", ["default", *LEVELS])
def test_max_parallel_each_level_overrides_the_ones_below(tmp_path, top):
    levels = set(LEVELS[: LEVELS.index(top) + 1]) if top != "default" else set()
    assert settings_with(tmp_path, levels).max_parallel == MAX_PARALLEL[top]


@pytest.mark.parametrize("missing", LEVELS)
def test_max_parallel_a_missing_level_falls_through_to_the_next_one_below(tmp_path, missing):
    levels = set(LEVELS) - {missing}
    expected = MAX_PARALLEL["flag"] if missing != "flag" else MAX_PARALLEL["env"]
    assert settings_with(tmp_path, levels).max_parallel == expected
    # and with only the levels below the missing one
    below = set(LEVELS[: LEVELS.index(missing)])
    top = LEVELS[LEVELS.index(missing) - 1] if below else "default"
    (tmp_path / "nova.toml").unlink(missing_ok=True)
    assert settings_with(tmp_path, below).max_parallel == MAX_PARALLEL[top]


@pytest.mark.parametrize(("key", "env_var"), [("worktree_dir", "NOVA_WORKTREE_DIR"),
                                              ("state_dir", "NOVA_STATE_DIR")])
@pytest.mark.parametrize("top", LEVELS)
def test_path_settings_follow_the_same_precedence(tmp_path, key, env_var, top):
    values = {level: f"/srv/{key}-{level}" for level in LEVELS}
    levels = set(LEVELS[: LEVELS.index(top) + 1])
    s = settings_with(tmp_path, levels, key=key, values=values, env_var=env_var)
    assert getattr(s, key) == values[top]


@pytest.mark.parametrize("top", ["nova", "run", "flag"])
def test_keys_without_an_environment_variable(tmp_path, top):
    values = {"nova": "pytest -q", "run": "make check", "env": "ignored", "flag": "tox"}
    levels = set(LEVELS[: LEVELS.index(top) + 1]) | {"env"}
    s = settings_with(tmp_path, levels, key="verify", values=values, env_var="NOVA_VERIFY_UNUSED")
    assert s.verify == values[top]


def test_each_layer_only_overrides_the_keys_it_sets(tmp_path):
    (tmp_path / "nova.toml").write_text(
        'max_parallel = 2\nverify = "pytest"\nfail_fast = true\ncpu_limit = 70\n[resources]\ndocker = 2\n')
    s = load_settings(tmp_path, {"verify": "make check", "kill_grace": 1},
                      environ={"NOVA_STATE_DIR": "/srv/state"}, flags={"max_parallel": 8, "verify": None})
    assert s.max_parallel == 8
    assert s.verify == "make check"  # a None flag means "not given"
    assert s.fail_fast is True
    assert s.cpu_limit == 70.0
    assert s.kill_grace == 1.0
    assert s.state_dir == "/srv/state"
    assert s.state_path(tmp_path) == Path("/srv/state")
    assert s.resources == {"docker": 2}
    assert s.worktree_dir == DEFAULT_WORKTREE_DIR


def test_config_file_elsewhere_replaces_the_repository_nova_toml(tmp_path):
    (tmp_path / "nova.toml").write_text("max_parallel = 2\nfail_fast = true\n")
    other = tmp_path / "elsewhere" / "ci.toml"
    other.parent.mkdir()
    other.write_text("max_parallel = 7\n")
    s = load_settings(tmp_path, config_file=other, environ={})
    assert s.max_parallel == 7
    assert s.fail_fast is False
    # and it still sits below [run]
    assert load_settings(tmp_path, {"max_parallel": 3}, config_file=other, environ={}).max_parallel == 3


def test_a_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, config_file=tmp_path / "nope.toml", environ={})
    assert "nope.toml" in str(info.value)


def test_the_real_environment_is_not_read_when_environ_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("NOVA_MAX_PARALLEL", "9")
    assert load_settings(tmp_path, environ={}).max_parallel == 4
    assert load_settings(tmp_path).max_parallel == 9  # without environ=, os.environ counts


def test_environ_is_not_mutated(tmp_path):
    environ = {"NOVA_MAX_PARALLEL": "3", "UNRELATED": "x"}
    load_settings(tmp_path, {"max_parallel": 2}, environ=environ, flags={"max_parallel": 5})
    assert environ == {"NOVA_MAX_PARALLEL": "3", "UNRELATED": "x"}


def test_empty_environment_variables_are_ignored(tmp_path):
    s = load_settings(tmp_path, {"max_parallel": 3}, environ={"NOVA_MAX_PARALLEL": "", "NOVA_STATE_DIR": ""})
    assert s.max_parallel == 3
    assert s.state_dir is None


def test_settings_are_frozen(tmp_path):
    s = load_settings(tmp_path, environ={})
    with pytest.raises(FrozenInstanceError):
        s.max_parallel = 99
    assert s.max_parallel == 4


# ---- bad values: the error names where the value came from -------------------------------


@pytest.mark.parametrize(("text", "field"), [
    ('max_parallel = "four"', "max_parallel"),
    ("max_parallel = 0", "max_parallel"),
    ('merge = "sometimes"', "merge"),
    ('on_conflict = "ignore"', "on_conflict"),
    ("cpu_limit = 150", "cpu_limit"),
    ("fail_fast = 1", "fail_fast"),
    ("max_paralel = 2", "max_paralel"),
    ("[resources]\ndocker = \"two\"", "resources"),
])
def test_bad_values_in_nova_toml(tmp_path, text, field):
    (tmp_path / "nova.toml").write_text(text + "\n")
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, environ={})
    assert info.value.field == field
    assert str(tmp_path / "nova.toml") in str(info.value)


def test_unknown_setting_suggests_the_right_one(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, {"max_paralel": 2}, tasks_file="jobs.toml", environ={})
    assert 'did you mean "max_parallel"' in str(info.value)
    assert "jobs.toml" in str(info.value)


def test_bad_value_in_run_table_names_the_tasks_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, {"max_parallel": -1}, tasks_file="jobs.toml", environ={})
    assert "jobs.toml" in str(info.value)
    assert info.value.field == "max_parallel"


@pytest.mark.parametrize("value", ["abc", "0", "-1", "2.5", "4096000"])
def test_bad_nova_max_parallel_names_the_variable(tmp_path, value):
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, environ={"NOVA_MAX_PARALLEL": value})
    assert "NOVA_MAX_PARALLEL" in str(info.value)


def test_nova_toml_syntax_error_names_the_file(tmp_path):
    (tmp_path / "nova.toml").write_text("max_parallel = = 3\n")
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, environ={})
    assert "nova.toml" in str(info.value)
    assert "line 1" in str(info.value)


def test_text_settings_are_taken_without_loading_pydantic(tmp_path):
    """`status` and friends read only text settings: they must not pay for the validator."""
    import subprocess
    import sys

    probe = ("import sys; from pathlib import Path; from novaproc.inputs.settings import load_settings; "
             f"s = load_settings(Path({str(tmp_path)!r}), {{'target': 'main'}}, "
             "environ={'NOVA_STATE_DIR': '/x'}, flags={'state_dir': '/y'}); "
             "print(s.state_dir, s.target, 'pydantic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["/y", "main", "False"]


def test_a_text_setting_of_another_type_is_still_an_error(tmp_path):
    with pytest.raises(ConfigError, match="target"):
        load_settings(tmp_path, {"target": 5}, environ={})


@pytest.mark.parametrize("entry", ["", "/", "../x", "a/../../x", "/abs/x", "*/../x"])
def test_worktree_include_names_paths_inside_the_repository(tmp_path: Path, entry: str) -> None:
    with pytest.raises(ConfigError, match="worktree_include"):
        load_settings(tmp_path, {"worktree_include": [entry]})


@pytest.mark.parametrize(("nova", "env"), [(None, {}), ('state_dir = "/tmp/s1"\nmax_parallel = 3\n', {}),
                                           ('state_dir = "/tmp/s1"\n', {"NOVA_STATE_DIR": "/tmp/s2"})])
def test_the_state_path_read_alone_is_the_settings_one(tmp_path, nova, env):
    if nova is not None:
        (tmp_path / "nova.toml").write_text(nova)
    assert state_path_of(tmp_path, environ=env) == load_settings(tmp_path, environ=env).state_path(tmp_path)


@pytest.mark.parametrize(("value", "seconds"), [('"2s"', 2.0), ("3", 3.0), ('"1m"', 60.0), ('"0"', 0.0)])
def test_retry_delay_takes_a_duration(tmp_path, value, seconds):
    (tmp_path / "nova.toml").write_text(f"retry_delay = {value}\n")
    assert load_settings(tmp_path).retry_delay == seconds


def test_a_bad_retry_delay_names_the_setting(tmp_path):
    (tmp_path / "nova.toml").write_text('retry_delay = "soon"\n')
    with pytest.raises(ConfigError, match="retry_delay"):
        load_settings(tmp_path)
