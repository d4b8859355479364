"""The quick ways through the checks of a tasks file give what the full ones give: a path kept
as written only when normalising would not change it, a NUL byte found wherever it is, and a
'..' after a wildcard refused while one before it is normalised."""

from __future__ import annotations

import posixpath

import pytest

from novaproc.errors import ConfigError
from novaproc.inputs import paths
from novaproc.inputs.taskfile import load_tasks
from novaproc.inputs.trust import check_strings, climbs

ROOT = "/srv/repo"


@pytest.mark.parametrize("declared", [
    "a", "a/b.txt", "d7/f1.txt", ".hidden/x", "a.b/..c", "...", "a/b..", "ü/ß",
    " a", "a ", "a\t", "./a", "a/./b", "a//b", "a/", ".", "..", "a/..", "a/../b", "/srv/repo/a", "/etc/x",
    "/srv/repo", "a/*.py", "a/b?/c", "[x]/y", "*", "",
])
def test_normalize_is_normpath_of_the_fixed_prefix(declared):
    def slow(p: str) -> str:  # the rule, written out without the quick way
        p = p.strip()
        if any(c in p for c in "*?["):
            p = paths.fixed_prefix(p)
        if p.startswith("/"):
            p = posixpath.normpath(p)
            rel = posixpath.relpath(p, ROOT)
            return p if rel == ".." or rel.startswith("../") else rel
        rel = posixpath.normpath(p or ".")
        if rel == ".." or rel.startswith("../"):
            raise paths.PathEscapes(declared)
        return rel

    try:
        expected = slow(declared)
    except paths.PathEscapes:
        with pytest.raises(paths.PathEscapes):
            paths.normalize(declared, ROOT)
    else:
        assert paths.normalize(declared, ROOT) == expected


@pytest.mark.parametrize(("declared", "refused"), [
    ("a/b/c", False), ("a/../b", False), ("../x", False), ("*/x", False), ("a/*/../b", True),
    ("*/../../etc", True), ("x?/..", True), ("[ab]/..", True), ("a/../*.py", False),
])
def test_a_dot_dot_counts_only_after_a_wildcard(declared, refused):
    assert climbs(declared) is refused


@pytest.mark.parametrize(("data", "task", "field"), [
    ({"tasks": {"a": {"cmd": "x\0"}}}, "a", "cmd"),
    ({"tasks": {"a": {"cmd": ["x", "y\0"]}}}, "a", "cmd"),
    ({"tasks": {"a": {"args": [1, [{"k": "\0"}]]}}}, "a", "args"),
    ({"tasks": {"a": {"env": {"N\0": "v"}}}}, "a", "env"),
    ({"tasks": {"a\0": {"cmd": "x"}}}, "a\0", None),
    ({"run": {"verify": ["ok", "no\0"]}}, None, "run.verify"),
    ({"k\0": 1}, None, "k\0"),
])
def test_a_nul_byte_is_found_anywhere(data, task, field):
    with pytest.raises(ConfigError) as caught:
        check_strings("tasks.toml", {"tasks": {"z": {"cmd": "fine", "writes": ["a", "b"]}}, **data})
    assert (caught.value.task, caught.value.field) == (task, field)


def test_strings_without_a_nul_byte_pass():
    tasks = {f"t{i}": {"cmd": ["a", "b"], "env": {"A": "1"}, "args": [1.5, [True, {"x": "y"}]]}
             for i in range(50)}
    check_strings("tasks.toml", {"run": {"max_parallel": 2}, "tasks": tasks})


@pytest.mark.parametrize("escape", ["\\u0000", "\\U00000000"])
def test_a_nul_byte_escaped_in_a_tasks_file_is_refused_as_it_is_read(tmp_path, escape):
    path = tmp_path / "tasks.toml"
    path.write_text(f'[tasks.a]\ncmd = "x{escape}y"\n')
    with pytest.raises(ConfigError) as caught:
        load_tasks(path)
    assert (caught.value.task, caught.value.field) == ("a", "cmd")
