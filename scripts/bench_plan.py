"""Benchmark: plan 10,000 tasks with random dependencies and overlapping paths, then drive the
plan's Schedule through a whole simulated run.

    python scripts/bench_plan.py

`run()` returns rows (name, seconds, note) for a driver such as scripts/bench.py; each note
starts with the unit, "s". `run(quick=True)` plans 1,000 tasks instead.
"""

from __future__ import annotations

import random
import time

from novaproc.inputs.kinds import Kind
from novaproc.inputs.taskfile import Task
from novaproc.planning.plan import Plan, make_plan

TASKS = 10_000
SLOTS = 8
ROOT = "/repo"
SEED = 20240601


def path_pool(rng: random.Random) -> list[str]:
    """Files under 200 packages of 50 modules, their package folders, and a few shared paths."""
    files = [f"pkg{p}/mod{m}.py" for p in range(200) for m in range(50)]
    folders = [f"pkg{p}" for p in range(200)]
    shared = ["/var/cache/nova-bench.db", "docs", "docs/index.md"]
    rng.shuffle(files)
    return files + folders + shared


def build_tasks(n: int = TASKS, seed: int = SEED) -> list[Task]:
    """`n` tasks: up to 3 dependencies each on earlier tasks, 1-2 files written (sometimes a
    whole package folder), 0-3 files read, and about 1% git or database tasks."""
    rng = random.Random(seed)
    pool = path_pool(rng)
    files, folders = pool[:10_000], pool[10_000:]
    tasks = []
    for i in range(n):
        deps = sorted(rng.sample(range(max(0, i - 200), i), k=min(i, rng.randint(0, 3))))
        writes = rng.sample(files, k=rng.randint(1, 2))
        if rng.random() < 0.02:
            writes.append(rng.choice(folders))
        reads = rng.sample(files, k=rng.randint(0, 3))
        kind = Kind.GIT if rng.random() < 0.005 else Kind.DATABASE if rng.random() < 0.005 else Kind.NORMAL
        tasks.append(Task(id=f"t{i}", cmd="true", depends_on=tuple(f"t{d}" for d in deps),
                          writes=tuple(writes), reads=tuple(reads), kind=kind))
    return tasks


def simulate_run(plan: Plan, slots: int, seed: int = SEED) -> dict[str, int]:
    """Drive Schedule as a supervisor would: fill the slots best first, end the oldest running
    task (1 in 200 fails), repeat. Returns how many tasks ended in each state."""
    rng = random.Random(seed)
    schedule = plan.schedule()
    running: list[str] = []
    while not schedule.finished():
        for tid in list(schedule.ready())[: slots - len(running)]:
            schedule.start(tid)
            running.append(tid)
        if not running:
            raise RuntimeError("stuck: nothing runs and nothing is ready [this is a bug]")
        schedule.finish(running.pop(0), ok=rng.random() >= 0.005)
    counts: dict[str, int] = {}
    for state in schedule.state.values():
        counts[str(state)] = counts.get(str(state), 0) + 1
    return counts


def run(quick: bool = False, n: int | None = None, slots: int = SLOTS) -> list[tuple[str, float, str]]:
    """Rows (name, seconds, note): building the models, make_plan, and a simulated run."""
    n = n or (TASKS // 10 if quick else TASKS)
    t0 = time.perf_counter()
    tasks = build_tasks(n)
    t1 = time.perf_counter()
    plan = make_plan(tasks, root=ROOT, slots=slots, isolation="worktree")
    t2 = time.perf_counter()
    counts = simulate_run(plan, slots)
    t3 = time.perf_counter()
    hard = len(plan.hard_edges)
    edges = sum(len(p) for p in plan.graph.preds.values())
    return [
        (f"plan: build {n} Task models", t1 - t0, "s"),
        (f"plan: make_plan, {n} tasks", t2 - t1,
         f"s  ({hard} dependencies, {len(plan.conflicts)} conflicts, {edges} edges, "
         f"{len(plan.layers())} layers, estimated speedup {plan.estimated_speedup:.2f}x on {slots} slots)"),
        (f"plan: Schedule through a simulated run, {n} tasks", t3 - t2,
         "s  (" + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ")"),
    ]


def main() -> None:
    rows = run()
    width = max(len(name) for name, _, _ in rows)
    print(f"{'benchmark':<{width}}  {'seconds':>8}  note")
    for name, seconds, note in rows:
        print(f"{name:<{width}}  {seconds:>8.3f}  {note.removeprefix('s').strip()}")


if __name__ == "__main__":
    main()
