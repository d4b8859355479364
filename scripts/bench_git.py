"""Benchmark of task isolation and merging on a generated repository of 50,000 files.

Measures, on the same repository and disk:
  - the average isolation cost per task (Workspaces.prepare + commit + release) over 50 small
    tasks run 4 at a time, counting the pool's creation and removal (close) too;
  - a plain `git worktree add` + `git worktree remove` per task, for comparison;
  - the same 50 tasks as a shell loop in 4 plain worktrees made beforehand (checkout -B, the
    edit, add -A, commit): what plain git costs a task at best;
  - git's own CPU per task and git command (rusage of the git children), which is less
    sensitive than wall time to other work on the machine;
  - merge_results on 50 disjoint results (merge-tree + commit-tree + compare-and-swap);
  - the same 50 tasks as a real `novaproc run -j 4` (its worktrees made and committed beside
    the loop, 4 at once), merge off as the shell loop merges nothing; with NOVA_BENCH_OTHER set
    to another novaproc's folder, that one too, alternated, for a before/after in one run.
Targets: the first at most 1/5 of the second; steady state at most 0.1 s and within 2x of the
shell loop; the merges under 1 s.

    python scripts/bench_git.py          # the repository is generated once under /tmp and reused
"""

from __future__ import annotations

import collections
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from novaproc.isolation import repo as repo_module
from novaproc.isolation.merge import merge_results
from novaproc.isolation.policy import MergePolicy
from novaproc.isolation.repo import Repo
from novaproc.isolation.worktree_pool import Workspaces

REPO = Path(os.environ.get("NOVA_BENCH_REPO", "/tmp/nova-bench-50k"))
WORKTREES = Path(os.environ.get("NOVA_WORKTREE_DIR", "/tmp/nova-worktrees"))
FILES, TASKS, SLOTS = 50_000, 50, 4
FRESH_SAMPLES = int(os.environ.get("NOVA_BENCH_FRESH", "3"))

Row = tuple[str, float, str]


def git(*args: str, cwd: Path = REPO) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def ensure_repo() -> str:
    """The generated repository's base commit; generated once."""
    if (REPO / ".git").is_dir() and git("rev-parse", "-q", "--verify", "refs/tags/bench-base"):
        return git("rev-parse", "bench-base")
    generate(REPO, FILES)
    git("tag", "bench-base")
    return git("rev-parse", "bench-base")


def generate(path: Path, files: int) -> None:
    """A repository at `path` on main whose one commit holds `files` files of 200-odd bytes in
    folders of 100 (fast-import, then a checkout)."""
    path.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "-b", "main", cwd=path)
    git("config", "user.name", "bench", cwd=path)
    git("config", "user.email", "bench@localhost", cwd=path)
    feed = subprocess.Popen(["git", "fast-import", "--quiet"], cwd=path, stdin=subprocess.PIPE)
    assert feed.stdin is not None
    for i in range(files):
        data = f"file {i}\n{'x' * 200}\n".encode()
        feed.stdin.write(b"blob\nmark :%d\ndata %d\n%s\n" % (i + 1, len(data), data))
    feed.stdin.write(b"commit refs/heads/main\ncommitter bench <bench@localhost> 0 +0000\ndata 4\nbase\n")
    for i in range(files):
        feed.stdin.write(b"M 100644 :%d %s\n" % (i + 1, path_of(i).encode()))
    feed.stdin.close()
    if feed.wait() != 0:
        sys.exit("git fast-import failed")
    git("reset", "-q", "--hard", "main", cwd=path)


def path_of(i: int) -> str:
    return f"d{i // 100:03d}/sub{(i // 10) % 10}/f{i:05d}.txt"


def bench_pool(base: str) -> tuple[list[Row], list[tuple[str, str | None]]]:
    """50 tasks, 4 at a time: prepare 4, each edits one file, then commit and release each."""
    os.sync()
    run_id = f"bench{os.getpid()}"
    phase = {"prepare": 0.0, "commit": 0.0, "release": 0.0, "close": 0.0}
    steady: list[float] = []
    results: list[tuple[str, str | None]] = []
    ws = Workspaces(Repo(REPO), run_id=run_id, worktree_dir=WORKTREES, base=base)
    for wave in range(0, TASKS, SLOTS):
        ids = [f"t{i}" for i in range(wave, min(wave + SLOTS, TASKS))]
        for i, task in zip(range(wave, wave + SLOTS), ids, strict=False):
            t0 = time.perf_counter()
            path = ws.prepare(task)
            phase["prepare"] += (took := time.perf_counter() - t0)
            (path / path_of(i * 997 % FILES)).write_text(f"changed by {task}\n")
            steady.append(took if wave else 0.0)
        for task in ids:
            t0 = time.perf_counter()
            results.append((task, ws.commit(task, (), task).commit))
            t1 = time.perf_counter()
            ws.release(task, keep=False)
            t2 = time.perf_counter()
            phase["commit"] += t1 - t0
            phase["release"] += t2 - t1
            if wave:
                steady[-len(ids) + ids.index(task)] += t2 - t0
    t0 = time.perf_counter()
    ws.close()
    phase["close"] = time.perf_counter() - t0
    total = sum(phase.values())
    reused = [s for s in steady if s]
    rows = [(f"pool: prepare+commit+release per task ({TASKS} tasks, {SLOTS} slots, incl. pool setup)",
             total / TASKS, " ".join(f"{k} {v / TASKS:.3f}" for k, v in phase.items()) + " (s/task)"),
            ("pool: per task on a reused worktree (steady state)", statistics.mean(reused),
             f"median {statistics.median(reused):.3f}")]
    return rows, results


def bench_shell(base: str) -> Row:
    """The same tasks run by a shell loop in 4 worktrees made beforehand (not timed)."""
    paths = [WORKTREES / f"bench-shell-{os.getpid()}-{k}" for k in range(SLOTS)]
    for path in paths:
        git("worktree", "add", "-q", "--detach", str(path), base)
    script = "".join(f"cd {paths[i % SLOTS]} && git checkout -q -B bench-shell-{os.getpid()}-{i} {base} && "
                     f"echo 'changed by t{i}' > {path_of(i * 997 % FILES)} && git add -A && "
                     f"git commit -q -m t{i} && git checkout -q --detach\n" for i in range(TASKS))
    os.sync()
    t0 = time.perf_counter()
    subprocess.run(["bash", "-e"], input=script, text=True, check=True, capture_output=True)
    took = (time.perf_counter() - t0) / TASKS
    for path in paths:
        git("worktree", "remove", "--force", str(path))
    for i in range(TASKS):
        git("branch", "-q", "-D", f"bench-shell-{os.getpid()}-{i}")
    return f"shell loop: checkout -B + add -A + commit per task, {SLOTS} worktrees", took, "s/task"


class GitCalls:
    """Wall and CPU (rusage of the git child) per git command run through Repo."""

    def __init__(self) -> None:
        self.calls: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])
        self._execute = repo_module.Repo._execute

    def __enter__(self) -> GitCalls:
        execute, calls = self._execute, self.calls

        def timed(repo: Repo, command: list[str], env: dict[str, str] | None, stdin: str | None) -> object:
            r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
            try:
                return execute(repo, command, env, stdin)
            finally:
                r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                entry = calls[command_name(command)]
                entry[0] += 1
                entry[1] += time.perf_counter() - t0
                entry[2] += r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime

        repo_module.Repo._execute = timed  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        repo_module.Repo._execute = self._execute  # type: ignore[method-assign]

    def rows(self) -> list[Row]:
        ranked = sorted(self.calls.items(), key=lambda kv: -kv[1][2])
        return [(f"  git {name} ({int(n)} calls)", cpu / TASKS, f"s/task git CPU, wall {wall / TASKS:.3f}")
                for name, (n, wall, cpu) in ranked if cpu / TASKS >= 0.0005]


def command_name(command: list[str]) -> str:
    """`git -C x -c k=v --git-dir d --work-tree w reset -q --keep` -> "reset --keep"."""
    args = command[3:]
    while args and args[0] in ("-c", "--git-dir", "--work-tree", "-C"):
        args = args[2:]
    words = [args[0]] if args else ["?"]
    words += [a for a in args[1:3] if a.startswith("--") or a in ("add", "move", "remove", "prune")][:1]
    return " ".join(words)


def bench_fresh(base: str) -> Row:
    """A plain `git worktree add` (full checkout) + `git worktree remove` per task."""
    times = []
    for i in range(FRESH_SAMPLES):
        os.sync()
        path = WORKTREES / f"bench-fresh-{os.getpid()}-{i}"
        t0 = time.perf_counter()
        git("worktree", "add", "-q", "--detach", str(path), base)
        git("worktree", "remove", "--force", str(path))
        times.append(time.perf_counter() - t0)
    spread = f"{len(times)} samples, min {min(times):.2f} max {max(times):.2f}"
    return "fresh: git worktree add + remove per task", statistics.mean(times), spread


def bench_merge(base: str, results: list[tuple[str, str | None]]) -> Row:
    """merge_results of the 50 disjoint results onto a scratch branch (no checkout to update)."""
    target = f"bench-target-{os.getpid()}"
    git("branch", "-f", target, base)
    t0 = time.perf_counter()
    policy = MergePolicy(target, base, on_conflict="fail", worktree_dir=WORKTREES)
    outcome = merge_results(Repo(REPO), f"bench{os.getpid()}", results, policy)
    took = time.perf_counter() - t0
    git("branch", "-D", target)
    return (f"merge {len(results)} disjoint results", took,
            f"exit {int(outcome.exit_code)}, {len(outcome.merged)} merged (target < 1 s)")


def bench_run(pythonpath: str | None, label: str) -> Row:
    """The 50 tasks of bench_pool as a `novaproc run -j 4` from a clean start (no spare worktrees)."""
    tasks, run_dir = REPO / "bench-tasks.toml", WORKTREES.parent / f"nova-bench-state-{os.getpid()}"
    exclude = REPO / ".git" / "info" / "exclude"
    exclude.parent.mkdir(exist_ok=True)
    if "bench-tasks.toml" not in (exclude.read_text() if exclude.exists() else ""):
        with exclude.open("a") as out:
            out.write("bench-tasks.toml\n")
    tasks.write_text('[run]\nmerge = "off"\ncpu_limit = 100\nmemory_limit = 100\n\n' + "".join(
        f'[tasks.t{i}]\ncmd = "echo changed by t{i} > {path_of(i * 997 % FILES)}"\n'
        f'writes = ["{path_of(i * 997 % FILES)}"]\n\n' for i in range(TASKS)))
    env = {**os.environ, "NOVA_STATE_DIR": str(run_dir), "NOVA_WORKTREE_DIR": str(WORKTREES)}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    os.sync()
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "novaproc", "run", str(tasks), "-j", str(SLOTS), "--quiet"],
                          cwd=REPO, env=env, capture_output=True, text=True)
    took = (time.perf_counter() - t0) / TASKS
    branches = git("for-each-ref", "--format=%(refname:short)", "refs/heads/nova/").split()
    if branches:
        git("branch", "-q", "-D", *branches)
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    return f"novaproc run -j {SLOTS}, merge off ({label})", took, f"s/task, exit {done.returncode}"


def run() -> list[Row]:
    base = ensure_repo()
    WORKTREES.mkdir(mode=0o700, parents=True, exist_ok=True)
    with GitCalls() as calls:
        pool_rows, results = bench_pool(base)
    shell = bench_shell(base)
    other = os.environ.get("NOVA_BENCH_OTHER")
    ran = [bench_run(None, "this"), *([bench_run(other, "other")] if other else [])]
    fresh = bench_fresh(base)
    ratio = pool_rows[0][1] / fresh[1]
    return [*pool_rows, *calls.rows(), shell,
            ("ratio pool steady state / shell loop", pool_rows[1][1] / shell[1], "target <= 2"),
            *ran, ("ratio run / shell loop", ran[0][1] / shell[1], "target <= 2"),
            fresh, ("ratio pool / fresh", ratio, "target <= 0.20"), bench_merge(base, results)]


def main() -> None:
    os.environ.setdefault("GIT_CONFIG_GLOBAL", "/dev/null")
    rows = run()
    width = max(len(name) for name, _, _ in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:8.3f}  {note}")


if __name__ == "__main__":
    main()
