"""What a pooled task changed, found from folder stat data and diff-files, must be exactly what
`git add -A` would commit, and the clean-up must leave exactly what `git clean -ffdx` would:
every kind of change, on the fast path (old folders) and on the racy one (just checked out)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.repo import git, make_repo

from novaproc.isolation import changes
from novaproc.isolation.repo import Repo
from novaproc.isolation.worktree_pool import Workspaces

pytestmark = pytest.mark.usefixtures("isolated_git")

FILES = {"a.txt": "a\n", "src/m.py": "x = 1\n", "src/deep/x.txt": "x\n", "keep/k.txt": "k\n",
         "d2/only.txt": "o\n", "tools/run.sh": "echo hi\n", ".gitignore": "*.log\nbuild/\n"}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = make_repo(tmp_path / "repo", FILES)
    os.chmod(path / "tools/run.sh", 0o755)
    os.symlink("a.txt", path / "link")
    (path / "tracked.log").write_text("t\n")
    git(path, "add", "-A")
    git(path, "add", "-f", "tracked.log")
    git(path, "commit", "-q", "-m", "more")
    return path


def same_size_rewrite(wt: Path) -> None:
    """a.txt rewritten with the same size and its mtime put back: only ctime (and, when it is
    racily clean, its content) can tell."""
    before = os.stat(wt / "a.txt")
    (wt / "a.txt").write_text("b\n")
    os.utime(wt / "a.txt", ns=(before.st_atime_ns, before.st_mtime_ns))


def new_files(wt: Path) -> None:
    (wt / "new.txt").write_text("n\n")
    (wt / "src/deep/new.txt").write_text("n\n")
    (wt / "fresh/sub").mkdir(parents=True)
    (wt / "fresh/sub/f.txt").write_text("f\n")
    (wt / "empty/inner").mkdir(parents=True)


def deletions_and_renames(wt: Path) -> None:
    (wt / "d2/only.txt").unlink()  # d2 is left empty: clean removes it
    os.rename(wt / "src/m.py", wt / "src/n.py")
    (wt / "keep/k.txt").unlink()
    (wt / "keep").rmdir()
    (wt / "keep").write_text("now a file\n")


def modes_and_links(wt: Path) -> None:
    os.chmod(wt / "tools/run.sh", 0o644)
    (wt / "link").unlink()
    os.symlink("src", wt / "link")
    os.symlink("tools/run.sh", wt / "run")


def file_to_folder(wt: Path) -> None:
    (wt / "a.txt").unlink()
    (wt / "a.txt").mkdir()
    (wt / "a.txt/inner").write_text("i\n")


def ignored(wt: Path) -> None:
    (wt / "x.log").write_text("l\n")
    (wt / "src/y.log").write_text("l\n")
    (wt / "build").mkdir()
    (wt / "build/out").write_text("o\n")
    (wt / "tracked.log").write_text("changed\n")  # tracked although ignored: committed


def nested_repository(wt: Path) -> None:
    """A repository of its own inside the task's worktree, one commit (the same one each time)."""
    template = Path(os.environ["NOVA_TEST_NESTED"])
    if not template.exists():
        make_repo(template, {"lib.txt": "l\n"})
    shutil.copytree(template, wt / "vendor/lib", symlinks=True)


def folder_to_symlink(wt: Path) -> None:
    """A tracked folder replaced by a link (its files now lie "beyond a symbolic link"), and
    another by a dangling one."""
    shutil.rmtree(wt / "src/deep")
    os.symlink("../keep", wt / "src/deep")
    shutil.rmtree(wt / "d2")
    os.symlink("nowhere", wt / "d2")


SCENARIOS: dict[str, Callable[[Path], None]] = {
    "same-size rewrite": same_size_rewrite, "new files": new_files,
    "deletions and renames": deletions_and_renames, "modes and links": modes_and_links,
    "file to folder": file_to_folder, "ignored": ignored, "nested repository": nested_repository,
    "folder to symlink": folder_to_symlink,
    "all at once": lambda wt: [f(wt) for f in (same_size_rewrite, new_files, deletions_and_renames,
                                               modes_and_links, ignored)],
}


def workspaces(repo: Path, tmp_path: Path) -> Workspaces:
    base = git(repo, "rev-parse", "HEAD")
    return Workspaces(Repo(repo), run_id="r1", worktree_dir=tmp_path / "wt", base=base)


def age(root: Path) -> None:
    """Every folder of `root` (not .git) stamped 10 s ago, as a pooled worktree's are."""
    then = time.time() - 10
    for folder, dirs, _ in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        os.utime(folder, (then, then))


def expected(repo: Path, tmp_path: Path, scenario: Callable[[Path], None]) -> tuple[str, set[str]]:
    """The tree `git add -A` commits after `scenario`, and what `git clean -ffdx` leaves."""
    wt = tmp_path / "truth"
    git(repo, "worktree", "add", "-q", "--detach", str(wt), "HEAD")
    scenario(wt)
    git(wt, "add", "-A")
    tree = git(wt, "write-tree")
    git(wt, "clean", "-q", "-ffdx")
    return tree, on_disk(wt)


def on_disk(root: Path) -> set[str]:
    found = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git" and not (Path(folder) / d / ".git").exists()]
        rel = Path(folder).relative_to(root).as_posix()
        found |= {f"{rel}/{n}".removeprefix("./") for n in [*dirs, *files] if n != ".git"}
    return found


@pytest.mark.parametrize("racy", [False, True], ids=["old folders", "racy folders"])
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_a_task_result_is_what_add_all_commits_and_the_clean_up_what_clean_leaves(
        repo: Path, tmp_path: Path, name: str, racy: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = SCENARIOS[name]
    monkeypatch.setenv("NOVA_TEST_NESTED", str(tmp_path / "nested"))
    tree, left = expected(repo, tmp_path, scenario)
    take = changes.Snapshot.take
    fast: list[changes.Found] = []
    if not racy:  # as in a pooled worktree whose folders were written long before the task
        monkeypatch.setattr(changes.Snapshot, "take", lambda wt, layout: (age(wt.path), take(wt, layout))[1])
    ws = workspaces(repo, tmp_path)
    find = changes.find
    monkeypatch.setattr(changes, "find", lambda *a: fast.append(found := find(*a)) or found)
    for task in ("t0", "t1"):  # t1 runs in t0's worktree, reused
        path = ws.prepare(task)
        scenario(path)
        result = ws.commit(task, (), task)
        assert result.commit is not None and git(repo, "rev-parse", f"{result.commit}^{{tree}}") == tree
        ws.release(task, keep=False)
        spare = next((tmp_path / "wt").glob("r1-.spare-*"), None)
        if spare is None:  # git moves no worktree holding a repository: it was removed instead
            assert name == "nested repository" and list((tmp_path / "wt").iterdir()) == []
            continue
        assert on_disk(spare) == left
        assert git(spare, "status", "--porcelain", "--ignored", "-uall") == ""
    assert fast[-1].stage is not None or racy  # old folders: the fast path was taken
    ws.close()


def test_a_task_that_ran_git_add_is_committed_the_whole_tree_way(repo: Path, tmp_path: Path) -> None:
    ws = workspaces(repo, tmp_path)
    path = ws.prepare("t")
    (path / "staged.txt").write_text("s\n")
    git(path, "add", "staged.txt")
    git(path, "rm", "-q", "--cached", "a.txt")  # untracked now, in an unchanged folder: add -A re-adds it
    result = ws.commit("t", (), "t")
    assert result.changed == ("staged.txt",)
    ws.release("t", keep=False)
    ws.close()
