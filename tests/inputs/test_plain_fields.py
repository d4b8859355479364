"""Tables of plain values skip pydantic (see inputs/plain.py): the tasks they give, and their
definition hashes, are the ones pydantic's validation gives."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys

import pytest
from support.tasks import write_tasks

from novaproc.errors import ConfigError
from novaproc.inputs import taskfile
from novaproc.inputs.taskfile import Task, load_tasks

BODIES = [
    'cmd = "make"',
    'cmd = ["pytest", "-q"]\nwrites = ["src/", "/var/cache/x.db"]\nreads = ["docs"]\ntimeout = "1m30s"',
    'call = "tools.docs:regenerate"\nargs = ["x", 1, {y = 2}]\nkwargs = {a = [1, 2]}',
    'cmd = "git push"\nretries = 3\ncpu = 2\nallow_failure = true\nenv = {A = "1"}\ncwd = "sub"',
    'cmd = "x"\nkind = "database"\nisolation = "none"\nexecutor = "local"\nresources = ["docker"]',
    'cmd = "x"\nresources = {gpu = 2}\ndescription = "d"\ndepends_on = ["b"]',
    'cmd = "x {item}"\nforeach = ["a", "b"]\nwrites = ["{item}"]',
]


def load(tmp_path, body: str) -> taskfile.TaskFile:
    return load_tasks(write_tasks(tmp_path, f'[tasks.a]\n{body}\n[tasks.b]\ncmd = "true"\n'))


@pytest.mark.parametrize("body", BODIES)
def test_plain_tables_give_what_pydantic_gives(tmp_path, monkeypatch, body):
    fast = load(tmp_path, body)
    monkeypatch.setattr(taskfile, "plainly_valid", lambda values: False)
    checked = load(tmp_path, body)
    assert fast.tasks == checked.tasks
    assert [t.__dict__ for t in fast.tasks] == [t.__dict__ for t in checked.tasks]  # types too
    assert fast.hashes == checked.hashes


@pytest.mark.parametrize(("body", "field"), [
    ('cmd = "x"\nretries = 101', "retries"),
    ('cmd = "x"\ncpu = 0', "cpu"),
    ('cmd = "x"\nallow_failure = "yes"', "allow_failure"),
    ('cmd = "x"\nkind = "gits"', "kind"),
    ('cmd = "x"\nisolation = "docker"', "isolation"),
    ('cmd = "x"\ndescription = 3', "description"),
    ('cmd = "x"\nretries = true', "retries"),
])
def test_values_that_are_not_plain_still_get_pydantic_s_error(tmp_path, body, field):
    with pytest.raises(ConfigError) as e:
        load(tmp_path, body)
    assert e.value.field == field


def test_the_definition_hash_is_the_one_journals_hold():
    # the hash of older journals: json of every field but description and kind_reason, unset
    # late fields left out, env sorted; resume matches tasks by it
    t = Task(id="a", cmd=("x", "y"), writes=("src",), env={"B": "2", "A": "1"}, timeout=5.0)
    fields = {f.name: getattr(t, f.name) for f in dataclasses.fields(Task)
              if f.name not in ("description", "kind_reason")}
    for name in ("foreach", "template", "item", "executor"):
        del fields[name]
    fields["env"] = sorted(fields["env"].items())
    blob = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    assert t.definition_hash() == hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert dataclasses.replace(t, description="other").definition_hash() == t.definition_hash()


def test_tasks_read_expanded_or_cached_share_their_key_table_as_constructed_ones_do(tmp_path):
    # 100,000 tasks: a dict of their own for each was 3 times the memory
    from novaproc.inputs.cache import load_inputs

    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    path = write_tasks(tmp_path, '[tasks.a]\ncmd = "x"\n[tasks.b]\ncmd = "y {item}"\nforeach = ["1", "2"]\n')
    constructed = sys.getsizeof(Task(id="c", cmd="z").__dict__)
    for _ in range(2):  # read, then from the cache
        loaded = load_inputs(path, environ=env)[0].tasks
        assert [t.id for t in loaded] == ["a", "b.1", "b.2"]
        assert all(sys.getsizeof(t.__dict__) <= constructed for t in loaded)
