"""Benchmark of the Dask executor, side by side with the local pool, in one run.

  1. 40 x `sleep 0.5` on a cluster of 1, 2 and 4 worker processes (a LocalCluster on 127.0.0.1,
     started once per size as a user's cluster is, each run at -j N), and the local pool at -j N.
     Targets: 2 workers at least 1.8x, 4 workers at least 3.4x faster than 1.
  2. The engine's cost per task: 200 x `true` at -j 2 on 2 workers, against the local pool.
  3. Bundles for a 5,000- and a 50,000-file repository: the complete bundle a worker new to the
     repository gets and the thin one a task's result comes back in (size, time to make, time
     to import), and a one-task run on a fresh machine's cache (clone from that bundle, checkout)
     against the same run once the worker's clone has the objects.

    python scripts/bench_dask.py [--quick]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_git import generate, git

from novaproc.isolation.bundles import make_bundle, take_bundle
from novaproc.isolation.repo import Repo

Row = tuple[str, float, str]
HOLD = """
import sys
from novaproc.execution.dask import local_cluster
cluster = local_cluster(int(sys.argv[1]))
print(cluster.scheduler_address, flush=True)
sys.stdin.read()
cluster.close()
"""
QUIET = {"cpu_limit": 100, "memory_limit": 100}


class Cluster:
    """A LocalCluster of `workers` processes held by a process of its own, its cache in `tmp`."""

    def __init__(self, workers: int, tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD, str(workers)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env={**os.environ, "TMPDIR": str(tmp)})
        assert self.proc.stdout is not None
        self.address = self.proc.stdout.readline().strip()
        time.sleep(1.0)  # the workers register

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


def make_repo(path: Path, files: int, tasks: str) -> Path:
    """A repository of `files` generated files (made once) holding `tasks` as its tasks file."""
    if not (path / ".git").is_dir():
        generate(path, files)
    (path / "tasks.toml").write_text(tasks)
    git("add", "tasks.toml", cwd=path)
    if git("status", "--porcelain", cwd=path):
        git("commit", "-q", "-m", "tasks", cwd=path)
    return path


def tasks_file(n: int, cmd: str) -> str:
    head = "[run]\n" + "".join(f"{k} = {v}\n" for k, v in QUIET.items())
    return head + "".join(f'[tasks.t{i}]\ncmd = "{cmd}"\n' for i in range(n))


def wall(repo: Path, jobs: int, env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "novaproc", "run", "-q", "-j", str(jobs), "tasks.toml"],
                          cwd=repo, env={**os.environ, **env}, capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"novaproc run failed in {repo}: {done.stdout}{done.stderr}")
    return took


def on(cluster: Cluster) -> dict[str, str]:
    return {"NOVA_EXECUTOR": "dask", "NOVA_SCHEDULER": cluster.address}


def scaling(root: Path, quick: bool) -> list[Row]:
    n = 16 if quick else 40
    repo = make_repo(root / "sleep", 10, tasks_file(n, "sleep 0.5"))
    rows: list[Row] = []
    walls: dict[int, float] = {}
    for workers in (1, 2, 4):
        cluster = Cluster(workers, root / f"tmp-{workers}")
        try:
            walls[workers] = min(wall(repo, workers, on(cluster)) for _ in range(2))
        finally:
            cluster.close()
        local = min(wall(repo, workers, {}) for _ in range(2))
        rows += [(f"{n} x sleep 0.5, {workers} Dask worker(s), -j {workers}", walls[workers], "s"),
                 (f"{n} x sleep 0.5, local pool, -j {workers}", local, "s")]
    rows += [("speedup, 2 workers over 1", walls[1] / walls[2], "x"),
             ("speedup, 4 workers over 1", walls[1] / walls[4], "x")]
    return rows


def overhead(root: Path, quick: bool) -> list[Row]:
    n = 50 if quick else 200
    repo = make_repo(root / "true", 10, tasks_file(n, "true"))
    cluster = Cluster(2, root / "tmp-true")
    try:
        wall(repo, 2, on(cluster))  # the workers' clone made, their host processes started
        dask = min(wall(repo, 2, on(cluster)) for _ in range(3))
    finally:
        cluster.close()
    local = min(wall(repo, 2, {}) for _ in range(3))
    return [(f"{n} x true, -j 2, 2 Dask workers", dask, "s"), (f"{n} x true, -j 2, local pool", local, "s"),
            ("engine cost per task, Dask", dask / n * 1000, "ms"), ("engine cost per task, local pool",
                                                                   local / n * 1000, "ms")]


def bundles(root: Path, quick: bool) -> list[Row]:
    rows: list[Row] = []
    for files in (5_000,) if quick else (5_000, 50_000):
        repo = make_repo(root / f"files-{files}", files, tasks_file(1, "echo one >> d000/f00000.txt"))
        rows += shipping(root, repo, files)
        tmp = root / f"tmp-files-{files}"
        shutil.rmtree(tmp, ignore_errors=True)
        cluster = Cluster(1, tmp)
        try:
            first = wall(repo, 1, on(cluster))
            git("reset", "-q", "--hard", "HEAD~1", cwd=repo)
            later = wall(repo, 1, on(cluster))
            git("reset", "-q", "--hard", "HEAD~1", cwd=repo)
        finally:
            cluster.close()
        local = wall(repo, 1, {})
        git("reset", "-q", "--hard", "HEAD~1", cwd=repo)
        rows += [(f"{files} files: 1-task run, worker new to the repository", first, "s"),
                 (f"{files} files: 1-task run, worker has the objects", later, "s"),
                 (f"{files} files: 1-task run, local pool", local, "s")]
    return rows


def shipping(root: Path, repo: Path, files: int) -> list[Row]:
    """What travels: the complete bundle a worker new to the repository gets and the thin one of
    a task's result (one file changed), their sizes, and the time to make and to import each."""
    source = Repo(repo)
    base = git("rev-parse", "HEAD", cwd=repo)
    clone_dir = root / f"clone-{files}"
    shutil.rmtree(clone_dir, ignore_errors=True)
    clone = Repo.init(clone_dir)
    rows: list[Row] = []
    for what, tip, have in (("complete", base, None), ("thin, one file changed", _one_change(repo), base)):
        start = time.perf_counter()
        data = make_bundle(source, tip, have)
        made = time.perf_counter() - start
        start = time.perf_counter()
        assert take_bundle(clone, data)
        taken = time.perf_counter() - start
        rows += [(f"{files} files: {what} bundle", len(data) / 1024, "KiB"),
                 (f"{files} files: {what} bundle, made", made * 1000, "ms"),
                 (f"{files} files: {what} bundle, imported", taken * 1000, "ms")]
    return rows


def _one_change(repo: Path) -> str:
    """A commit on top of HEAD changing one file, as a task's result is (no ref points at it)."""
    blob = subprocess.run(["git", "hash-object", "-w", "--stdin"], cwd=repo, input="changed\n", text=True,
                          capture_output=True, check=True).stdout.strip()
    index = {**os.environ, "GIT_INDEX_FILE": str(repo / ".git" / "bench-index")}
    subprocess.run(["git", "read-tree", "HEAD"], cwd=repo, env=index, check=True)
    first = git("ls-files", cwd=repo).partition("\n")[0]
    subprocess.run(["git", "update-index", "--cacheinfo", f"100644,{blob},{first}"], cwd=repo,
                   env=index, check=True)
    tree = subprocess.run(["git", "write-tree"], cwd=repo, env=index, capture_output=True, text=True,
                          check=True).stdout.strip()
    return git("commit-tree", tree, "-p", "HEAD", "-m", "one change", cwd=repo)


def run(quick: bool = False) -> list[Row]:
    root = Path(tempfile.gettempdir()) / "nova-bench-dask"
    root.mkdir(exist_ok=True)
    return [*scaling(root, quick), *overhead(root, quick), *bundles(root, quick)]


if __name__ == "__main__":
    for name, value, unit in run("--quick" in sys.argv):
        print(f"{name:<60} {value:10.3f} {unit}", flush=True)
