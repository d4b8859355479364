"""Workspaces driven from many threads at once, as the supervisor drives it: different tasks
prepared, committed and released side by side on one real repository."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support.repo import commit_all, git, nova_branches, worktree_paths
from support.stamps import meeting_cmd, met

from novaproc.isolation.repo import Repo
from novaproc.isolation.worktree_pool import Workspaces

pytestmark = pytest.mark.usefixtures("isolated_git")

THREADS = 6


@pytest.fixture
def repo(git_repo: Callable[..., Path]) -> Path:
    return git_repo({"a.txt": "a\n", "src/m.py": "x = 1\n", ".gitignore": "*.log\n"})


def workspaces(repo: Path, tmp_path: Path) -> Workspaces:
    return Workspaces(Repo(repo), run_id="r1", worktree_dir=tmp_path / "wt",
                      base=git(repo, "rev-parse", "HEAD"))


def tree(repo: Path, commit: str) -> dict[str, str]:
    names = git(repo, "ls-tree", "-r", "--name-only", commit).split()
    return {name: git(repo, "show", f"{commit}:{name}", strip=False) for name in names}


def test_tasks_prepared_committed_and_released_from_many_threads(repo: Path, tmp_path: Path) -> None:
    ws = workspaces(repo, tmp_path)
    base = tree(repo, "HEAD")
    barrier = threading.Barrier(THREADS)

    def task(tid: str, fails: bool) -> str | None:
        path = ws.prepare(tid)
        assert not (path / "out").exists() and not (path / "scratch.log").exists()  # nothing of another task
        (path / "out").mkdir()
        (path / "out" / f"{tid}.txt").write_text(f"{tid}\n")
        (path / "scratch.log").write_text("ignored\n")
        if fails:
            ws.release(tid, keep=True)
            return None
        result = ws.commit(tid, [f"out/{tid}.txt"], tid)
        ws.release(tid, keep=False)
        return result.commit

    def worker(n: int) -> dict[str, str | None]:
        barrier.wait()  # the first tasks all make their worktrees at once
        return {tid: task(tid, fails=tid.endswith("-2") and n % 2 == 0)
                for tid in (f"t{n}-{i}" for i in range(3))}

    with ThreadPoolExecutor(THREADS) as threads:
        results = {tid: commit for got in threads.map(worker, range(THREADS)) for tid, commit in got.items()}

    failed = sorted(tid for tid, commit in results.items() if commit is None)
    assert failed == [f"t{n}-2" for n in range(0, THREADS, 2)]
    for tid, commit in results.items():
        if commit is not None:
            assert tree(repo, commit) == {**base, f"out/{tid}.txt": f"{tid}\n"}, tid
    assert sorted(nova_branches(repo)) == sorted(f"nova/r1/{t}" for t in results)  # kept ones' too
    kept = ws.close()
    assert sorted(kept) == sorted(ws.path_of(t) for t in failed)
    assert sorted(worktree_paths(repo)) == sorted([repo.resolve(), *kept])


def test_the_pools_first_checkouts_run_side_by_side(repo: Path, tmp_path: Path) -> None:
    """A smudge filter stands for a slow checkout: it writes when it starts and ends, and waits
    for the other two in between."""
    log = tmp_path / "smudge.log"
    git(repo, "config", "filter.slow.smudge", f"{meeting_cmd(log, 3)}; cat")
    (repo / ".gitattributes").write_text("a.txt filter=slow\n")
    commit_all(repo, "slow checkouts")
    ws = workspaces(repo, tmp_path)

    with ThreadPoolExecutor(3) as threads:
        paths = list(threads.map(ws.prepare, ["t1", "t2", "t3"]))

    assert all((p / "a.txt").read_text() == "a\n" for p in paths)
    assert met(log, 3), log.read_text()  # under the pool's lock they came one by one
    for tid in ("t1", "t2", "t3"):
        ws.release(tid, keep=False)
    assert ws.close() == []
