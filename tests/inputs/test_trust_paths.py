"""check_paths over many tasks: each path and folder is looked at once, and a path that leads out
of the repository through a symlink is refused whatever else shares its folder, naming the first
task (in declared order) and field that names it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from novaproc.errors import ConfigError
from novaproc.inputs.kinds import Kind
from novaproc.inputs.taskfile import Task
from novaproc.inputs.trust import check_paths, escapes


def task(tid: str, writes: tuple[str, ...] = (), reads: tuple[str, ...] = (), cwd: str | None = None) -> Task:
    return Task(id=tid, cmd="true", kind=Kind.NORMAL, writes=writes, reads=reads, cwd=cwd)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "target.txt").write_text("")
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "src" / "a.py").write_text("")
    os.symlink(outside, root / "esc")  # a folder out of the repository
    os.symlink(outside / "target.txt", root / "src" / "link.txt")  # a file out of it
    os.symlink(root / "src", root / "inside")  # a folder within it: allowed
    return root


def refusal(root: Path, tasks: list[Task]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        check_paths("tasks.toml", root, tasks, ())
    return caught.value


def test_a_symlinked_folder_declared_by_many_tasks_is_refused_naming_the_first(repo: Path):
    tasks = [task(f"t{i}", writes=(f"gen/f{i}.txt",)) for i in range(500)]
    tasks += [task(f"u{i}", writes=(f"esc/f{i}.txt",)) for i in range(500)]
    tasks.insert(700, task("first", reads=("esc",)))
    error = refusal(repo, tasks)
    assert (error.task, error.field) == ("u0", "writes")
    assert "'esc/f0.txt' leads out of the repository" in str(error)


def test_a_symlinked_file_in_an_existing_folder_is_refused_among_its_neighbours(repo: Path):
    tasks = [task(f"t{i}", writes=(f"src/f{i}.txt",)) for i in range(300)]
    tasks.append(task("last", reads=("src/a.py", "src/link.txt")))
    error = refusal(repo, tasks)
    assert (error.task, error.field) == ("last", "reads")
    assert "target.txt" in str(error)


def test_a_missing_path_under_a_symlinked_folder_is_refused(repo: Path):
    assert escapes("esc/not/yet/there.txt", repo) is not None
    assert refusal(repo, [task("t", writes=("esc/sub/new/x.txt",))]).field == "writes"


def test_a_cwd_through_the_symlink_is_refused(repo: Path):
    error = refusal(repo, [task("a", writes=("src/a.py",)), task("b", cwd="esc/sub")])
    assert (error.task, error.field) == ("b", "cwd")


def test_paths_in_folders_not_made_yet_and_links_within_the_repository_pass(repo: Path):
    tasks = [task(f"t{i}", writes=(f"build/d{i % 7}/f{i}.o",), reads=("src", "inside/a.py", ".", "/etc"))
             for i in range(200)]
    check_paths("tasks.toml", repo, tasks, ("inside", "build/cache"))


def test_a_worktree_include_through_the_symlink_is_refused(repo: Path):
    with pytest.raises(ConfigError) as caught:
        check_paths("tasks.toml", repo, [task("t", writes=("src/a.py",))], ("src", "esc/*"))
    assert caught.value.field == "worktree_include"
