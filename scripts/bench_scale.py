"""Benchmark of novaproc at scale: `plan` of 1,000 / 10,000 / 100,000 tasks in three shapes, cold
and from the input cache; a run of as many `true` tasks, and `status` of it.

    python scripts/bench_scale.py [--quick] [--repeat N]     (--quick: 1,000 and 10,000 only)

Shapes, each as n hand-written [tasks.x] tables and as one foreach template of n items:
    independent  trivial tasks, nothing shared
    conflicts    each task writes a random file of 1,000 folders (1 in 100 a whole folder); the
                 foreach gives each item its own file and has it write the item's folder, so its
                 100 tasks per folder all conflict
    dag          up to 3 dependencies on random tasks among the 1,000 before (tables only: the
                 tasks of one template cannot depend on each other)

Each figure is measured `repeat` times in a fresh process; rows give the fastest, with the range
in the note, and the growth as the exponent of a log-log fit of time over n (1.0 is linear). RSS
is the peak of the process (for a run, the supervisor's, or its largest worker's), from GNU time.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

Row = tuple[str, float, str]
SHAPES = ("independent", "conflicts", "dag")
FORMS = ("tables", "foreach")
FOLDERS = 1_000
SEED = 20261207
NOVAPROC = [sys.executable, "-m", "novaproc"]


def tasks_toml(shape: str, form: str, n: int, seed: int = SEED) -> str:
    """The text of a tasks file of `n` tasks of `shape` in `form`."""
    if form == "foreach":
        return _foreach(shape, n)
    rng = random.Random(seed)
    parts = ['[run]\nisolation = "none"\n']
    for i in range(n):
        parts.append(f'[tasks.t{i}]\ncmd = "true"\n')
        if shape == "conflicts":
            folder = rng.randrange(FOLDERS)
            path = f"d{folder}" if rng.random() < 0.01 else f"d{folder}/f{rng.randrange(100)}.txt"
            parts.append(f'writes = ["{path}"]\n')
        elif shape == "dag" and i:
            deps = rng.sample(range(max(0, i - 1_000), i), k=min(i, rng.randint(0, 3)))
            parts.append("depends_on = [" + ", ".join(f'"t{d}"' for d in sorted(deps)) + "]\n")
    return "".join(parts)


def _foreach(shape: str, n: int, cmd: str = '"true {item}"', run: str = "") -> str:
    if shape == "dag":
        raise ValueError("the tasks of one foreach template cannot depend on each other")
    if shape == "conflicts":
        items, writes = [f"d{i % FOLDERS}/f{i}.txt" for i in range(n)], 'writes = ["{dir}"]\n'
    else:
        items, writes = [f"i{i}" for i in range(n)], ""
    listed = "".join(f'  "{item}",\n' for item in items)
    return f'[run]\nisolation = "none"\n{run}[tasks.t]\ncmd = {cmd}\n{writes}foreach = [\n{listed}]\n'


def measure(argv: Sequence[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one command, which must succeed. The peak is GNU time's: a
    child's own peak starts at its parent's size when it forks, and this process is large."""
    with tempfile.NamedTemporaryFile("r") as peak:
        gnu_time = os.path.exists("/usr/bin/time")
        timed = ["/usr/bin/time", "-f", "%M", "-o", peak.name, *argv] if gnu_time else list(argv)
        started = time.perf_counter()
        proc = subprocess.run(timed, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              check=False)
        seconds = time.perf_counter() - started
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace")[-500:]
            raise RuntimeError(f"{' '.join(map(str, argv))} failed: {err}")
        kib = peak.read().split()[-1:] if gnu_time else []
    return seconds, float(kib[0]) / 1024 if kib else float("nan")


def growth(sizes: Sequence[int], seconds: Sequence[float]) -> float:
    """The exponent k of seconds ~ n**k, a least-squares fit of the logarithms."""
    xs, ys = [math.log(n) for n in sizes], [math.log(s) for s in seconds]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def plan_figures(folder: Path, shape: str, form: str, n: int, repeat: int) -> dict[str, list[float]]:
    """Cold and cached seconds and RSS of `novaproc plan`, `repeat` times each."""
    path = folder / f"{shape}-{form}-{n}.toml"
    path.write_text(tasks_toml(shape, form, n))
    got: dict[str, list[float]] = {"cold": [], "cold_rss": [], "cached": [], "cached_rss": []}
    for _ in range(repeat):
        cache = Path(tempfile.mkdtemp(dir=folder))
        env = {**os.environ, "XDG_CACHE_HOME": str(cache), "NOVA_STATE_DIR": str(folder / "state")}
        for phase in ("cold", "cached"):
            seconds, rss = measure([*NOVAPROC, "plan", str(path)], env)
            got[phase].append(seconds)
            got[f"{phase}_rss"].append(rss)
        shutil.rmtree(cache, ignore_errors=True)
    return got


def plan_rows(folder: Path, sizes: Sequence[int], repeat: int) -> list[Row]:
    rows: list[Row] = []
    for shape in SHAPES:
        for form in FORMS:
            if shape == "dag" and form == "foreach":
                continue
            best: dict[str, list[float]] = {"cold": [], "cached": []}
            for n in sizes:
                got = plan_figures(folder, shape, form, n, repeat)
                for phase in ("cold", "cached"):
                    times, rss = got[phase], got[f"{phase}_rss"]
                    best[phase].append(min(times))
                    note = f"s  ({min(times):.2f}-{max(times):.2f} s, RSS {min(rss):.0f}-{max(rss):.0f} MiB)"
                    rows.append((f"plan {shape} {form} {n:,} {phase}", min(times), note))
            for phase in ("cold", "cached") if len(sizes) > 1 else ():
                last = growth(sizes[-2:], best[phase][-2:])
                rows.append((f"plan {shape} {form} {phase}: growth exponent", growth(sizes, best[phase]),
                             f"(log-log fit over {', '.join(f'{n:,}' for n in sizes)}; "
                             f"{last:.2f} from {sizes[-2]:,} to {sizes[-1]:,})"))
    return rows


def run_figures(folder: Path, n: int) -> dict[str, float]:
    """A run of `n` x `true` at -j2 (no throttle, no worktrees), then `status` and `status RUN`."""
    work = folder / f"run-{n}"
    work.mkdir()
    path = work / "tasks.toml"
    path.write_text(_foreach("independent", n, cmd='["true"]', run="cpu_limit = 100\nmemory_limit = 100\n"))
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"), "NOVA_STATE_DIR": str(work / "state")}
    measure([*NOVAPROC, "plan", str(path)], env)  # the run below reads it from the input cache
    wall, rss = measure([*NOVAPROC, "run", "-q", "-j", "2", str(path)], env)
    [run_folder] = (work / "state" / "runs").iterdir()
    files = sum(len(names) for _, _, names in os.walk(run_folder))
    listing = min(measure([*NOVAPROC, "status"], env, cwd=work)[0] for _ in range(3))
    detail = min(measure([*NOVAPROC, "status", run_folder.name], env, cwd=work)[0] for _ in range(3))
    shutil.rmtree(work, ignore_errors=True)
    return {"wall": wall, "rss": rss, "files": files, "status": listing, "status_run": detail}


def run_rows(folder: Path, sizes: Sequence[int]) -> list[Row]:
    rows: list[Row] = []
    for n in sizes:
        got = run_figures(folder, n)
        rows += [(f"run {n:,} x true -j2: wall", got["wall"], f"s  ({got['wall'] / n * 1000:.2f} ms a task)"),
                 (f"run {n:,} x true -j2: peak RSS", got["rss"], "MiB  (the supervisor's, or a worker's)"),
                 (f"run {n:,}: files in its run folder", got["files"], "files"),
                 (f"run {n:,}: status", got["status"], "s"),
                 (f"run {n:,}: status RUN", got["status_run"], "s")]
    return rows


def run(quick: bool = False, repeat: int = 3) -> list[Row]:
    sizes = (1_000, 10_000) if quick else (1_000, 10_000, 100_000)
    folder = Path(tempfile.mkdtemp(prefix="nova-scale-"))
    try:
        return plan_rows(folder, sizes, repeat) + run_rows(folder, sizes)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str]) -> None:
    repeat = int(argv[argv.index("--repeat") + 1]) if "--repeat" in argv else 3
    for name, value, unit in run("--quick" in argv, repeat):
        print(f"{name:<52} {value:10.3f} {unit}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
