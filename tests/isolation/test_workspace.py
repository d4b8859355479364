"""Workspaces on real repositories: layout, results as commits, dependents' bases, pool reuse
that leaves nothing behind, concurrent creation, and `clean` after a crash."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.repo import git, nova_branches

from novaproc.errors import EnvironmentFault
from novaproc.isolation.clean import clean, remove_stale_locks
from novaproc.isolation.furnish import SetupFailed
from novaproc.isolation.interface import BaseConflict
from novaproc.isolation.repo import Repo
from novaproc.isolation.worktree_pool import Workspaces, undeclared

pytestmark = pytest.mark.usefixtures("isolated_git")


@pytest.fixture
def repo(git_repo: Callable[..., Path]) -> Path:
    return git_repo({"a.txt": "a\n", "src/m.py": "x = 1\n", ".gitignore": "*.log\nbuild/\n"})


def workspaces(repo: Path, tmp_path: Path, run_id: str = "r1", **kw: object) -> Workspaces:
    return Workspaces(Repo(repo), run_id=run_id, worktree_dir=tmp_path / "wt",
                      base=git(repo, "rev-parse", "HEAD"), **kw)  # type: ignore[arg-type]


def files_in(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.relative_to(folder).parts[0] != ".git" and (p.is_file() or p.is_symlink())}


def test_layout_branch_includes_and_setup(repo: Path, tmp_path: Path) -> None:
    (repo / ".env").write_text("SECRET=1\n")
    (repo / "node_modules").mkdir()
    ws = workspaces(repo, tmp_path, setup="mkdir -p build && echo done > build/setup.out",
                    include=(".env", "node_modules"))
    path = ws.prepare("t1")
    assert path == (tmp_path / "wt").resolve() / "r1-t1"
    assert git(path, "symbolic-ref", "--short", "HEAD") == "nova/r1/t1"
    assert (path / ".env").read_text() == "SECRET=1\n" and (path / "node_modules").is_symlink()
    assert (path / "build" / "setup.out").exists()
    assert oct((tmp_path / "wt").stat().st_mode & 0o777) == "0o700"
    result = ws.commit("t1", (), "nothing")  # included files and setup output are not results
    assert result.commit is None
    ws.release("t1", keep=False)
    assert ws.close() == []


def test_failing_setup_raises_and_the_worktree_can_be_kept(repo: Path, tmp_path: Path) -> None:
    ws = workspaces(repo, tmp_path, setup="echo broken; exit 7")
    with pytest.raises(SetupFailed, match="exit 7"):
        ws.prepare("t1")
    ws.release("t1", keep=True)
    assert ws.close() == [ws.path_of("t1")]
    assert ws.path_of("t1").is_dir()


def test_commit_records_every_change_and_undeclared_files(repo: Path, tmp_path: Path) -> None:
    ws = workspaces(repo, tmp_path)
    path = ws.prepare("t1")
    (path / "src" / "m.py").write_text("x = 2\n")
    (path / "src" / "new.py").write_text("y = 1\n")
    (path / "a.txt").unlink()
    (path / "debug.log").write_text("ignored\n")
    result = ws.commit("t1", ("src/",), "edit src")
    assert result.changed == ("a.txt", "src/m.py", "src/new.py")
    assert result.undeclared == ("a.txt",)
    assert git(repo, "rev-parse", "nova/r1/t1") == result.commit
    assert git(repo, "log", "-1", "--format=%an|%s", result.commit) == "Test|edit src"
    assert "debug.log" not in git(repo, "ls-tree", "-r", "--name-only", result.commit)


def test_commits_made_by_the_task_are_kept(repo: Path, tmp_path: Path) -> None:
    ws = workspaces(repo, tmp_path)
    path = ws.prepare("t1")
    (path / "one.txt").write_text("1\n")
    git(path, "add", "one.txt")
    git(path, "commit", "-qm", "task's own commit")
    own = git(path, "rev-parse", "HEAD")
    (path / "two.txt").write_text("2\n")
    result = ws.commit("t1", (), "rest")
    assert git(repo, "rev-parse", f"{result.commit}^") == own
    assert result.changed == ("one.txt", "two.txt") and result.undeclared == ()


def test_a_dependent_sees_its_dependencies_changes(repo: Path, tmp_path: Path) -> None:
    ws = workspaces(repo, tmp_path)
    results = []
    for task, name in (("gen", "gen.txt"), ("other", "other.txt")):
        path = ws.prepare(task)
        (path / name).write_text(task)
        results.append(ws.commit(task, (), task).commit)
        ws.release(task, keep=False)
    path = ws.prepare("use", results)
    assert (path / "gen.txt").read_text() == "gen" and (path / "other.txt").read_text() == "other"
    assert ws.commit("use", (), "none").commit is None  # the merged base is not the dependent's change


def test_conflicting_parents_say_which_one_and_on_what(repo: Path, tmp_path: Path) -> None:
    ws = workspaces(repo, tmp_path)
    results = []
    for task in ("x", "y"):
        path = ws.prepare(task)
        (path / "a.txt").write_text(task)
        results.append(ws.commit(task, (), task).commit)
        ws.release(task, keep=False)
    with pytest.raises(BaseConflict, match=r"a\.txt") as info:
        ws.prepare("z", results)
    # the second parent conflicts with the first; the supervisor runs it again on the first's
    assert (info.value.files, info.value.index, info.value.merged) == (("a.txt",), 1, results[0])


@pytest.mark.parametrize("committed", [True, False])
def test_reuse_leaves_nothing_from_an_earlier_task(repo: Path, tmp_path: Path, committed: bool) -> None:
    (repo / ".env").write_text("E\n")
    ws = workspaces(repo, tmp_path, include=(".env",))
    path = ws.prepare("dirty")
    admin = git(path, "rev-parse", "--absolute-git-dir")
    (path / "a.txt").write_text("modified\n")
    (path / "src" / "m.py").unlink()
    (path / "untracked.txt").write_text("u\n")
    (path / "build" / "deep").mkdir(parents=True)
    (path / "build" / "deep" / "obj.o").write_text("ignored\n")
    (path / "x.log").write_text("ignored\n")
    (path / "staged.txt").write_text("s\n")
    git(path, "add", "staged.txt")
    (path / ".env").write_text("changed by the task\n")
    if committed:
        ws.commit("dirty", (), "dirty")
    ws.release("dirty", keep=False)
    path = ws.prepare("clean")
    assert git(path, "rev-parse", "--absolute-git-dir") == admin  # the same worktree, reused
    assert files_in(path) == {".env", ".gitignore", "a.txt", "src/m.py"}
    assert (path / "a.txt").read_text() == "a\n" and (path / ".env").read_text() == "E\n"
    assert git(path, "status", "--porcelain", "--ignored") == "?? .env"  # brought in, never committed
    assert git(path, "symbolic-ref", "--short", "HEAD") == "nova/r1/clean"
    ws.release("clean", keep=False)
    ws.close()
    assert len(git(repo, "worktree", "list", "--porcelain").split("\n\n")) == 1
    assert nova_branches(repo) == (["nova/r1/dirty"] if committed else [])


def test_a_retry_gets_a_fresh_worktree_under_the_same_name(repo: Path, tmp_path: Path) -> None:
    ws = workspaces(repo, tmp_path)
    path = ws.prepare("t1")
    (path / "junk.txt").write_text("first attempt\n")
    ws.release("t1", keep=True)
    again = ws.prepare("t1")
    assert again == path and not (again / "junk.txt").exists()
    ws.release("t1", keep=False)
    assert ws.close() == []


def test_sixteen_runs_create_worktrees_at_once(repo: Path, tmp_path: Path) -> None:
    spaces = [workspaces(repo, tmp_path, run_id=f"run{i}") for i in range(16)]
    paths: dict[int, Path] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(16)

    def start(i: int) -> None:
        barrier.wait()
        try:
            paths[i] = spaces[i].prepare("task")
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(set(paths.values())) == 16
    assert all((p / "a.txt").read_text() == "a\n" for p in paths.values())
    for space in spaces:
        space.release("task", keep=False)
        space.close()
    assert git(repo, "worktree", "list").count("\n") == 0 and nova_branches(repo) == []


def test_worktree_dir_owned_by_someone_else_or_a_symlink_is_refused(repo: Path, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "wt").symlink_to(real)
    with pytest.raises(EnvironmentFault, match="symbolic link"):
        workspaces(repo, tmp_path)


def test_clean_after_a_crash(repo: Path, tmp_path: Path) -> None:
    crash = ("import os; from pathlib import Path; from novaproc.isolation.worktree_pool import Workspaces\n"
             "from novaproc.isolation.repo import Repo\n"
             f"ws = Workspaces(Repo({str(repo)!r}), run_id='dead', "
             f"worktree_dir=Path({str(tmp_path / 'wt')!r}), base='HEAD')\n"
             "p = ws.prepare('t1'); (p / 'f.txt').write_text('x'); ws.commit('t1', (), 'x')\n"
             "ws.prepare('t2'); os._exit(0)\n")
    subprocess.run([sys.executable, "-c", crash], check=True, env=os.environ)
    live = workspaces(repo, tmp_path, run_id="alive")
    live_path = live.prepare("t1")
    lock = repo / ".git" / "index.lock"
    lock.write_text("")
    os.utime(lock, (1, 1))
    report = clean(repo, worktree_dir=tmp_path / "wt")
    assert {p.name for p in report.worktrees} == {"dead-t1", "dead-t2"}
    assert report.live_runs == ("alive",) and report.locks == (lock,)
    assert report.branches == ("nova/dead/t2",)  # at the base: merged; t1's result is not
    assert live_path.is_dir() and not (tmp_path / "wt" / "dead-t1").exists()
    assert clean(repo, worktree_dir=tmp_path / "wt", all_branches=True).branches == ("nova/dead/t1",)
    live.release("t1", keep=False)
    live.close()


def test_undeclared_paths() -> None:
    changed = ("src/a.py", "src/sub/b.py", "docs/x.md", "srcx/c.py", "top.txt")
    assert undeclared(changed, ()) == ()
    assert undeclared(changed, (".",)) == ()
    assert undeclared(changed, ("src", "top.txt")) == ("docs/x.md", "srcx/c.py")
    assert undeclared(changed, ("src/*.py", "docs/", "/abs/elsewhere")) == ("srcx/c.py", "top.txt")


def test_stale_index_lock_is_removed_but_a_held_one_is_not(repo: Path) -> None:
    lock = repo / ".git" / "index.lock"
    lock.write_text("")
    assert remove_stale_locks(Repo(repo)) == []  # too young: a git may be starting
    old = time.time() - 60
    os.utime(lock, (old, old))
    holder = subprocess.Popen(["sleep", "30"], stdin=lock.open("rb"))
    try:
        assert remove_stale_locks(Repo(repo)) == [] and lock.exists()
    finally:
        holder.kill()
        holder.wait()
    assert remove_stale_locks(Repo(repo)) == [lock]
    assert not lock.exists()
