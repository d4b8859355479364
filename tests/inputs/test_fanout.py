"""Fan-out (`foreach`): placeholders, items, ids, dependencies on a template, bad input, and how
`plan` shows a template. Real files and git repositories; bad input through the real CLI."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.cli import run_cli
from support.repo import commit_all, make_repo, write_files
from support.tasks import RUN_TABLE, task, toml_value, write_tasks

from novaproc.errors import ConfigError
from novaproc.inputs.cache import load_inputs
from novaproc.inputs.ids import valid_id
from novaproc.inputs.taskfile import Task


def expanded(folder: Path, text: str) -> dict[str, Task]:
    """The tasks of a tasks file written in `folder`, templates expanded, by id."""
    folder.mkdir(parents=True, exist_ok=True)
    taskfile, _ = load_inputs(write_tasks(folder, text))
    return taskfile.by_id()


def ids_for(folder: Path, items: list[str], template: str = "fmt") -> list[str]:
    """The ids of a template's tasks over the list `items`, in order."""
    tasks = expanded(folder, task(template, ["echo", "{item}"], foreach=items))
    return [t.id for t in tasks.values() if t.template == template]


def plan_json(path: Path, *args: str) -> dict:
    result = run_cli("plan", path, "--json", *args, cwd=path.parent)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# ---- placeholders --------------------------------------------------------------------------


def test_file_placeholders_fill_every_field(tmp_path):
    repo = make_repo(tmp_path / "repo", {"src/app/core.py": "", "setup.cfg": ""})
    tasks = expanded(repo, """
        [tasks.fmt]
        foreach = "**/*.py"
        cmd = ["ruff", "{item}", "{}", "{name}", "{stem}", "{suffix}", "{dir}"]
        description = "format {name} in {dir}"
        writes = ["{item}"]
        reads = ["{dir}/__init__.py"]
        cwd = "{dir}"
        env = { FILE = "{stem}{suffix}", PLAIN = "x" }
        [tasks.gen]
        foreach = ["top.txt"]
        call = "tools.gen:make"
        args = ["{stem}", 3, ["{dir}"]]
        kwargs = { out = "{item}", n = 2 }
    """)
    t = tasks["fmt.src_app_core.py"]
    assert (t.template, t.item, t.foreach) == ("fmt", "src/app/core.py", None)
    assert t.cmd == ("ruff", "src/app/core.py", "src/app/core.py", "core.py", "core", ".py", "src/app")
    assert t.description == "format core.py in src/app"
    assert (t.writes, t.reads, t.cwd) == (("src/app/core.py",), ("src/app/__init__.py",), "src/app")
    assert t.env == {"FILE": "core.py", "PLAIN": "x"}
    g = tasks["gen.top.txt"]
    assert g.args == ("top", 3, ["."])  # {dir} at the top is '.'
    assert g.kwargs == {"out": "top.txt", "n": 2}


def test_name_stem_suffix_of_unusual_file_names(tmp_path):
    tasks = expanded(tmp_path, task("t", ["echo", "{name}|{stem}|{suffix}|{dir}"],
                                    foreach=["a/b/archive.tar.gz", ".bashrc", "README"]))
    assert [t.cmd[1] for t in tasks.values()] == [
        "archive.tar.gz|archive.tar|.gz|a/b", ".bashrc|.bashrc||.", "README|README||."]


def test_matrix_keys_and_item_in_key_order(tmp_path):
    tasks = expanded(tmp_path, task("shard", "tox -e py{py} -- --os {os} {item}",
                                    foreach={"py": ["3.11", "3.12"], "os": ["linux", "mac"]}))
    assert list(tasks) == ["shard.3.11-linux", "shard.3.11-mac", "shard.3.12-linux", "shard.3.12-mac"]
    assert tasks["shard.3.12-mac"].cmd == "tox -e py3.12 -- --os mac 3.12-mac"


def test_literal_braces_and_braces_that_are_no_placeholder(tmp_path):
    cmd = "awk '{print $1}' {item} | echo {{item}} ${{HOME}} x{a,b} { } {0}"
    tasks = expanded(tmp_path, task("t", cmd, foreach=["f.txt"]))
    assert tasks["t.f.txt"].cmd == "awk '{print $1}' f.txt | echo {item} ${HOME} x{a,b} { } {0}"


def test_literal_braces_in_fields_without_a_placeholder(tmp_path):
    tasks = expanded(tmp_path, """
        [tasks.t]
        foreach = ["a"]
        cmd = "echo {item}"
        description = "set {{x}}"
        env = { A = "{{y}}" }
    """)
    assert (tasks["t.a"].description, tasks["t.a"].env) == ("set {x}", {"A": "{y}"})


# names no shell may split or run; none holds a '/', so each is its own {name}
HOSTILE = ["a b;rm x.py", "it's", 'say "hi"', "$(rm -rf ~)", "`id`", "line\nbreak", "-rf",
           "été ü.py", "*.py", "back\\slash", "semi;colon&amp|pipe>out"]


def test_a_shell_cmd_quotes_each_value_as_one_word(tmp_path):
    tasks = expanded(tmp_path, task("t", "cat {item} > out/{name}.txt", foreach=HOSTILE))
    for t in tasks.values():
        assert t.cmd == f"cat {shlex.quote(t.item)} > out/{shlex.quote(t.item)}.txt"
        words = shlex.split(t.cmd)
        assert words == ["cat", t.item, ">", f"out/{t.item}.txt"], t.item


def test_an_argv_cmd_passes_values_as_they_are(tmp_path):
    tasks = expanded(tmp_path, task("t", ["cat", "{item}", "--name={name}"], foreach=HOSTILE))
    assert [t.cmd for t in tasks.values()] == [("cat", i, f"--name={i}") for i in HOSTILE]


def test_hostile_items_stay_one_argument_when_run(tmp_path, box):
    """One real run: each item reaches printf as one argument, and none of it runs."""
    items = ["a b;touch pwned", "$(touch pwned)", "`touch pwned`", "it's", "-n", "line\nbreak", "é"]
    repo = make_repo(tmp_path / "repo", {"out/.keep": "", "tasks.toml": RUN_TABLE + task(
        "say", "printf '%s' {item} > out/{stem}.txt", foreach=items, writes=["out/{stem}.txt"])
        + task("m", "echo {os} {py} > m-{item}.txt", foreach={"os": ["linux"], "py": ["3.11", "3.12"]},
               writes=["m-{item}.txt"])})
    ran = box.run(repo / "tasks.toml")
    assert ran.code == 0, ran
    assert sorted(ran.states().values()) == ["done"] * 9
    for item in items:
        assert (repo / "out" / f"{item}.txt").read_text() == item
    assert (repo / "m-linux-3.12.txt").read_text() == "linux 3.12\n"
    assert not list(tmp_path.rglob("pwned"))


# ---- items --------------------------------------------------------------------------------


def test_glob_in_git_takes_tracked_files_sorted(tmp_path):
    repo = make_repo(tmp_path / "repo", {"src/b.py": "", "src/a.py": "", "src/x/y/deep.py": "",
                                         "src/notes.txt": "", "top.py": "", "src/.hidden.py": ""})
    write_files(repo, {"src/untracked.py": "", "src/x/new.py": ""})
    items = [t.item for t in expanded(repo, task("t", ["x", "{}"], foreach="src/**/*.py")).values()]
    assert items == ["src/.hidden.py", "src/a.py", "src/b.py", "src/x/y/deep.py"]
    flat = [t.item for t in expanded(repo, task("t", ["x", "{}"], foreach="src/*.py")).values()]
    assert flat == ["src/.hidden.py", "src/a.py", "src/b.py"]


def test_glob_outside_git_takes_files_under_the_tasks_file_folder(tmp_path):
    write_files(tmp_path, {"above.txt": "", "proj/b.txt": "", "proj/a.txt": "", "proj/sub/c.txt": "",
                           "proj/sub/d.md": ""})
    (tmp_path / "proj" / "dir.txt").mkdir()
    deep = expanded(tmp_path / "proj", task("t", ["x", "{}"], foreach="**/*.txt"))
    assert [t.item for t in deep.values()] == ["a.txt", "b.txt", "sub/c.txt"]
    flat = expanded(tmp_path / "proj", task("t", ["x", "{}"], foreach="*.txt"))
    assert [t.item for t in flat.values()] == ["a.txt", "b.txt"]


def test_absolute_glob_keeps_absolute_items(tmp_path):
    write_files(tmp_path, {"shared/2.db": "", "shared/1.db": "", "shared/x.txt": ""})
    shared = (tmp_path / "shared").resolve()
    tasks = expanded(make_repo(tmp_path / "repo", {"r": ""}),
                     task("t", ["x", "{}"], foreach=f"{shared}/*.db", writes=["{item}"]))
    assert [t.item for t in tasks.values()] == [f"{shared}/1.db", f"{shared}/2.db"]
    assert [t.writes for t in tasks.values()] == [(f"{shared}/1.db",), (f"{shared}/2.db",)]


def test_an_absolute_glob_into_the_repository_gives_relative_items(tmp_path):
    repo = make_repo(tmp_path / "repo", {"src/a.py": "", "src/b.py": ""})
    tasks = expanded(repo, task("t", ["x", "{}"], foreach=f"{repo.resolve()}/src/*.py"))
    assert [t.item for t in tasks.values()] == ["src/a.py", "src/b.py"]


def test_list_items_keep_their_order(tmp_path):
    tasks = expanded(tmp_path, task("t", ["x", "{}"], foreach=["zeta", "alpha", "mid"]))
    assert [(t.id, t.item) for t in tasks.values()] == [
        ("t.zeta", "zeta"), ("t.alpha", "alpha"), ("t.mid", "mid")]


# ---- ids ----------------------------------------------------------------------------------


def test_id_is_template_dot_slug(tmp_path):
    assert ids_for(tmp_path, ["src/app/core.py", "a b+c@d.py", "x-y_z.1"]) == [
        "fmt.src_app_core.py", "fmt.a_b_c_d.py", "fmt.x-y_z.1"]


def test_ids_are_stable_and_a_hashed_id_ignores_other_items(tmp_path):
    first = ids_for(tmp_path / "1", ["A.py", "a.py"])
    assert first == ids_for(tmp_path / "2", ["A.py", "a.py"])
    assert ids_for(tmp_path / "3", ["b.py", "A.py", "c.py", "a.py"])[1::2] == first


def test_case_collisions_are_hashed_and_near_names_are_not(tmp_path):
    ids = ids_for(tmp_path, ["A.py", "a.py", "_utils.py", "utils.py", "a b.py", "a_b.py"])
    assert all(re.fullmatch(r"fmt\.[Aa]\.py-[0-9a-f]{6,}", i) for i in ids[:2]), ids
    assert ids[2:4] == ["fmt._utils.py", "fmt.utils.py"]
    assert ids[4] != ids[5] and all(i.startswith("fmt.a_b.py-") for i in ids[4:])
    assert len({i.lower() for i in ids}) == len(ids)


def test_long_items_are_cut_and_hashed_within_64_chars(tmp_path):
    items = ["deep/" * 20 + "one.py", "deep/" * 20 + "two.py"]
    ids = ids_for(tmp_path / "1", items, template="t" * 48)
    assert len(set(ids)) == 2
    assert all(len(i) <= 64 and valid_id(i) and i.startswith("t" * 48 + ".") for i in ids), ids
    assert ids == ids_for(tmp_path / "2", items, template="t" * 48)


@pytest.mark.parametrize("item", ["..", ".", "x.lock", "repo.git", "a..b", "end.", "-x", "é"])
def test_awkward_items_give_valid_ids(tmp_path, item):
    (tid,) = ids_for(tmp_path, [item])
    assert valid_id(tid), tid
    assert tid.startswith("fmt.")


def test_every_matrix_combination_is_a_task(tmp_path):
    tasks = expanded(tmp_path, task("m", ["x", "{a}", "{b}"],
                                    foreach={"a": ["x-y", "x"], "b": ["z", "y-z"]}))
    assert sorted(t.cmd[1:] for t in tasks.values()) == [
        ("x", "y-z"), ("x", "z"), ("x-y", "y-z"), ("x-y", "z")]


# ---- dependencies on a template -----------------------------------------------------------

DEPENDENT = (task("fmt", ["fmt", "{}"], foreach=["a.py", "b.py"])
             + task("shard", ["tox", "{n}"], foreach={"n": ["1", "2"]}, depends_on=["fmt"])
             + task("report", "report", depends_on=["fmt", "shard"]))


def test_a_template_id_in_depends_on_stands_for_all_its_tasks(tmp_path):
    tasks = expanded(tmp_path, DEPENDENT)
    assert tasks["shard.1"].depends_on == tasks["shard.2"].depends_on == ("fmt.a.py", "fmt.b.py")
    assert tasks["report"].depends_on == ("fmt.a.py", "fmt.b.py", "shard.1", "shard.2")
    assert tasks["fmt.a.py"].depends_on == ()


def test_a_dependency_on_one_task_of_a_template(tmp_path):
    body = task("fmt", ["echo", "{item}"], foreach=["a.py", "b.py"])
    assert expanded(tmp_path / "ok", body + task("after", "true", depends_on=["fmt.b.py"]))[
        "after"].depends_on == ("fmt.b.py",)
    with pytest.raises(ConfigError, match=r"unknown task 'fmt.c.py'.*did you mean"):
        expanded(tmp_path / "bad", body + task("after", "true", depends_on=["fmt.c.py"]))


def test_only_a_template_plans_its_tasks(tmp_path):
    path = write_tasks(tmp_path, DEPENDENT)
    assert [t["id"] for t in plan_json(path, "--only", "fmt")["tasks"]] == ["fmt.a.py", "fmt.b.py"]
    assert [t["id"] for t in plan_json(path, "--only", "shard")["tasks"]] == [
        "fmt.a.py", "fmt.b.py", "shard.1", "shard.2"]


# ---- bad input: exit 2, one line naming file, task and field ---------------------------------


@dataclass(frozen=True)
class Bad:
    id: str
    tasks: str
    expect: tuple[str, ...]  # regexes, all found in the one line of stderr
    make: Callable[[Path], object] | None = None  # prepares the folder (a git repository)


def _untracked_only(folder: Path) -> None:
    make_repo(folder, {"README": ""})
    write_files(folder, {"a.py": ""})


def _fmt(body: str, foreach: str = '["a.py"]', tid: str = "fmt") -> str:
    return f"[tasks.{tid}]\nforeach = {foreach}\n{body}\n"


BAD = [
    Bad("glob-matches-nothing", _fmt('cmd = "x {}"', '"*.nothing"'),
        (r"task 'fmt'", r"field 'foreach'", r"\*\.nothing", r"matches no file")),
    Bad("glob-matches-only-untracked", _fmt('cmd = "x {}"', '"*.py"'),
        (r"task 'fmt'", r"field 'foreach'", r"tracked"), make=_untracked_only),
    Bad("unknown-placeholder", _fmt('cmd = "x {nmae}"'),
        (r"task 'fmt'", r"field 'cmd'", r"\{nmae\}", r'did you mean "name"')),
    Bad("unknown-placeholder-in-writes", _fmt('cmd = "x {}"\nwrites = ["{nmae}"]'),
        (r"task 'fmt'", r"field 'writes'", r'did you mean "name"')),
    Bad("file-placeholder-in-a-matrix", _fmt('cmd = "x {name}"', '{py = ["3.12"]}'),
        (r"task 'fmt'", r"field 'cmd'", r"\{name\}", r"\{py\}")),
    Bad("shell-variable", _fmt('cmd = "echo ${HOME} {}"'),
        (r"task 'fmt'", r"field 'cmd'", r"\{HOME\}", re.escape("${{HOME}}"))),
    Bad("placeholder-in-quotes", _fmt("cmd = \"echo '{}'\""),
        (r"task 'fmt'", r"field 'cmd'", r"quote")),
    Bad("placeholder-in-double-quotes", _fmt("cmd = 'echo \"{name}\"'"),
        (r"task 'fmt'", r"field 'cmd'", r"quote")),
    Bad("over-100000-items", _fmt('cmd = "x {}"', toml_value([f"i{n}" for n in range(100_001)])),
        (r"task 'fmt'", r"field 'foreach'", r"100,000")),
    Bad("matrix-over-100000-combinations", _fmt('cmd = "x {a}{b}{c}"', toml_value(
        {k: [str(n) for n in range(100)] for k in "abc"})), (r"field 'foreach'", r"1,000,000")),
    Bad("placeholder-in-table-id", _fmt('cmd = "x {}"', tid='"fmt-{stem}"'),
        (r"task 'fmt-\{stem\}'", r"placeholder")),
    Bad("matrix-empty-list", _fmt('cmd = "x {py}"', "{py = []}"),
        (r"task 'fmt'", r"field 'foreach\.py'", r"non-empty")),
    Bad("matrix-number", _fmt('cmd = "x {py}"', '{py = ["3.11", 3]}'),
        (r"task 'fmt'", r"field 'foreach\.py'", r"string")),
    Bad("matrix-key-item", _fmt('cmd = "x {}"', '{item = ["1"]}'),
        (r"task 'fmt'", r"field 'foreach'", r"'item'")),
    Bad("duplicated-item", _fmt('cmd = "x {}"', '["a.py", "b.py", "a.py"]'),
        (r"task 'fmt'", r"field 'foreach'", r"'a\.py' twice")),
    Bad("depends-on-itself", _fmt('cmd = "x {}"\ndepends_on = ["fmt"]'),
        (r"task 'fmt'", r"field 'depends_on'", r"cycle")),
    Bad("explicit-id-of-an-expanded-task", _fmt('cmd = "x {}"') + '[tasks."fmt.a.py"]\ncmd = "y"\n',
        (r"fmt\.a\.py", r"item 'a\.py' of 'fmt'")),
    Bad("template-id-over-48", _fmt('cmd = "x {}"', tid="t" * 49),
        (rf"task '{'t' * 49}'", r"48")),
    Bad("writes-climbs-after-substitution", _fmt('cmd = "x {}"\nwrites = ["../{item}"]'),
        (r"fmt\.a\.py", r"field 'writes'", re.escape("'../a.py'"), r"climbs out")),
]


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_bad_fanout_exits_2_with_one_line(tmp_path, case):
    folder = (tmp_path / "proj").resolve()
    if case.make is not None:
        case.make(folder)
    path = write_tasks(folder, case.tasks)
    result = run_cli("plan", path, cwd=folder)
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert str(path) in line
    for pattern in case.expect:
        assert re.search(pattern, line), f"{pattern!r} not in {line!r}"


def test_bad_fanout_is_a_config_error_when_loaded(tmp_path):
    with pytest.raises(ConfigError) as e:
        expanded(tmp_path, _fmt('cmd = "x {}"\nreads = ["../{name}"]'))
    assert (e.value.field, e.value.task.split()[0]) == ("reads", "fmt.a.py")


# ---- expansion at every load, the validated-inputs cache in use ------------------------------


def test_a_new_tracked_file_gets_a_task_at_the_next_plan(tmp_path):
    cache = tmp_path / "cache"
    repo = make_repo(tmp_path / "repo", {"src/a.py": "", "tasks.toml": task(
        "fmt", ["ruff", "{item}"], foreach="src/*.py", writes=["{item}"])})

    def planned() -> list[str]:
        result = run_cli("plan", repo / "tasks.toml", "--json", cwd=repo,
                         env={"XDG_CACHE_HOME": str(cache)})
        assert result.returncode == 0, result.stderr
        return [t["id"] for t in json.loads(result.stdout)["tasks"]]

    assert planned() == ["fmt.src_a.py"]
    entries = list(cache.rglob("*.pickle"))
    assert len(entries) == 1  # the validated inputs are cached...
    write_files(repo, {"src/b.py": ""})
    commit_all(repo, "b")
    assert planned() == ["fmt.src_a.py", "fmt.src_b.py"]  # ...and expanded again
    assert list(cache.rglob("*.pickle")) == entries


# ---- plan output --------------------------------------------------------------------------


def test_plan_text_shows_a_template_once_and_collapses_its_dependents(tmp_path):
    repo = make_repo(tmp_path / "repo", {f"src/{c}.py": "" for c in "dcba"} | {"tasks.toml":
                     task("fmt", ["ruff", "{item}"], foreach="src/*.py", writes=["{item}"])
                     + task("report", "report", depends_on=["fmt"], writes=["report.txt"])})
    result = run_cli("plan", repo / "tasks.toml", cwd=repo)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Tasks (5):" in out
    assert re.search(r"1\. fmt\.\*\s+4 tasks, one per item: src/a\.py, src/b\.py, src/c\.py, \.\.\.$",
                     out, re.M), out
    assert "fmt.src_" not in out  # no line per expanded task
    assert re.search(r"2\. report .*depends on fmt \(4 tasks\)", out), out
    assert re.search(r"Layer 1: fmt \(4 tasks\)$", out, re.M), out


def test_plan_json_lists_every_expanded_task_with_template_and_item(tmp_path):
    path = write_tasks(tmp_path, DEPENDENT)
    tasks = {t["id"]: t for t in plan_json(path)["tasks"]}
    assert list(tasks) == ["fmt.a.py", "fmt.b.py", "shard.1", "shard.2", "report"]
    assert [(t.get("template"), t.get("item")) for t in tasks.values()] == [
        ("fmt", "a.py"), ("fmt", "b.py"), ("shard", "1"), ("shard", "2"), (None, None)]
    assert tasks["report"]["depends_on"] == ["fmt.a.py", "fmt.b.py", "shard.1", "shard.2"]


@pytest.mark.parametrize(("cmd", "where"), [
    ("echo \\{item}", "after a backslash"),
    ("echo ${item}", "after a \\$"),
    ("echo $'a\\' {item} '", "inside quotes"),
    ("cat <<EOF\\n{item}\\nEOF", "heredoc"),
])
def test_a_placeholder_where_shell_quoting_does_not_hold_is_refused(tmp_path, cmd, where):
    with pytest.raises(ConfigError, match=where):
        expanded(tmp_path, task("t", cmd, foreach=["$(touch pwned)"]))
    assert not (tmp_path / "pwned").exists()


def test_a_glob_on_disk_never_takes_novaprocs_own_state_folder(tmp_path):
    work = tmp_path / "work"
    write_files(work, {"a.txt": "", ".nova/runs/r1/events.jsonl": "", ".nova/each/x.toml": ""})
    tasks = expanded(work, task("t", ["cat", "{}"], foreach="**/*"))
    assert sorted(t.item for t in tasks.values()) == ["a.txt", "tasks.toml"]
