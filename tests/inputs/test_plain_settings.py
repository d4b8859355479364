"""Settings of plain values skip pydantic (see inputs/plain.py): whatever the plain checks take,
pydantic's validation takes too, and reading a usual nova.toml does not load pydantic."""

from __future__ import annotations

import dataclasses
import itertools
import math
import subprocess
import sys
from pathlib import Path

import pytest

from novaproc.errors import ConfigError
from novaproc.inputs import plain
from novaproc.inputs.schema import Invalid, validate
from novaproc.inputs.settings import MAX_SLOTS, Settings, load_settings

FIELDS = [f.name for f in dataclasses.fields(Settings)]
# values of every plain type and around every bound, right and wrong
CANDIDATES = [None, True, False, "", "x", "auto", "off", "worktree", "none", "merge", "linear", "squash",
              "rerun", "fail", "warn", "file", "line", "local", "dask", "tcp://h:8786", -1, 0, 1, 100, 101,
              3600, MAX_SLOTS, MAX_SLOTS + 1, -0.5, 0.0, 0.5, 90.0, 100.0, 100.5, 3600.0, 3600.5, 1e9,
              math.inf, math.nan, (), ("a",), ("a", 1), ["a"], {}, {"gpu": 2}, {"gpu": 0}, {"gpu": "2"},
              {"gpu": True}, {1: 2}]


def test_every_setting_has_a_plain_check():
    assert sorted(plain._SETTINGS_CHECKS) == sorted(FIELDS)
    assert plain._SETTINGS_CHECKS["max_parallel"](MAX_SLOTS)
    assert not plain._SETTINGS_CHECKS["max_parallel"](MAX_SLOTS + 1)


@pytest.mark.parametrize(("field", "value"), itertools.product(FIELDS, CANDIDATES))
def test_what_the_plain_checks_take_pydantic_takes(field, value):
    if not plain.plain_settings({field: value}):
        return
    try:
        validate(Settings, {field: value})
    except Invalid as e:
        pytest.fail(f"{field} = {value!r}: plain, but pydantic says {e.problem}")


def test_each_check_takes_its_default():
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)
                if f.default is not dataclasses.MISSING}
    assert plain.plain_settings({**defaults, "resources": {"docker": 2}})


@pytest.mark.parametrize(("text", "field"), [
    ("max_parallel = 0", "max_parallel"), ("cpu_limit = 0", "cpu_limit"), ('merge = "on"', "merge"),
    ("fail_fast = 1", "fail_fast"), ("kill_grace = 4000", "kill_grace"),
    ("resources = {gpu = 0}", "resources"),
])
def test_values_that_are_not_plain_still_get_pydantic_s_error(tmp_path, text, field):
    (tmp_path / "nova.toml").write_text(text + "\n")
    with pytest.raises(ConfigError) as e:
        load_settings(tmp_path, environ={}, quick=True)
    assert e.value.field == field


def test_the_starter_nova_toml_is_read_without_loading_pydantic(tmp_path: Path):
    """`status` reads the settings for the state folder: with the nova.toml `init` writes (numbers,
    durations, a table) it must not pay ~70 ms for the validator."""
    from novaproc.cli.init import NOVA_TOML

    (tmp_path / "nova.toml").write_text(NOVA_TOML)
    probe = ("import sys; from pathlib import Path; from novaproc.inputs.settings import load_settings; "
             f"s = load_settings(Path({str(tmp_path)!r}), {{'fail_fast': True}}, environ={{}}, quick=True); "
             "print(s.max_parallel, s.retry_delay, s.fail_fast, "
             "'pydantic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["4", "1.0", "True", "False"]


def test_status_in_a_repository_with_the_starter_nova_toml_does_not_load_pydantic(tmp_path: Path):
    from novaproc.cli.init import NOVA_TOML

    (tmp_path / "nova.toml").write_text(NOVA_TOML)
    probe = ("import sys; from novaproc.cli.main import main; code = main(['status']); "
             "print(code, 'pydantic' in sys.modules, 'novaproc.inputs.taskfile' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                         check=True)
    assert out.stdout.splitlines()[-1].split() == ["0", "False", "False"]
