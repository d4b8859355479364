"""Benchmark of `novaproc run` beside its peers: xargs -P, GNU parallel, make -j and a plain
shell loop, on the same batches, in one run, reported as ratios.

Batches: 1,000 trivial tasks (`true`) and 200 x `sleep 0.05`, at -j2 and -j4. Also: start-up
time, the supervisor's peak memory, the cost of psutil sampling, and what the default throttle
costs a CPU-bound batch that fills every core.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

Row = tuple[str, float, str]


def _tasks_file(folder: Path, n: int, argv: list[str], *, throttle: bool, name: str = "") -> Path:
    lines = ["[run]", 'isolation = "none"']
    if not throttle:
        lines += ["cpu_limit = 100", "memory_limit = 100"]
    cmd = "[" + ", ".join(f'"{a}"' for a in argv) + "]"
    lines += [f"[tasks.t{i}]\ncmd = {cmd}" for i in range(n)]
    path = folder / f"tasks-{n}-{name or '-'.join(argv)}-{throttle}.toml".replace(" ", "_")
    path.write_text("\n".join(lines) + "\n")
    return path


def _makefile(folder: Path, n: int, command: str) -> Path:
    path = folder / f"Makefile-{n}-{command.replace(' ', '_')}"
    targets = " ".join(f"t{i}" for i in range(n))
    body = [f".PHONY: all {targets}", f"all: {targets}"] + [f"t{i}:\n\t@{command}" for i in range(n)]
    path.write_text("\n".join(body) + "\n")
    return path


def _time(cmd: list[str] | str, *, env: dict[str, str] | None = None, repeat: int = 3) -> float:
    """Best wall time of `repeat` runs (the least disturbed by the rest of the machine)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, shell=isinstance(cmd, str), env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - start)
    return best


def _time_novaproc(tasks: Path, jobs: int, env: dict[str, str], repeat: int = 3) -> float:
    """Best time of `novaproc run`, its tasks file read once before (as by `plan`): the first
    reading of a file is timed in `startup`."""
    subprocess.run([sys.executable, "-m", "novaproc", "plan", f"-j{jobs}", str(tasks)], env=env,
                   check=True, stdout=subprocess.DEVNULL)
    return _time([sys.executable, "-m", "novaproc", "run", "-q", f"-j{jobs}", str(tasks)], env=env,
                 repeat=repeat)


def _peers(folder: Path, n: int, command: str, jobs: int) -> dict[str, list[str] | str]:
    seq = f"seq {n}"
    peers: dict[str, list[str] | str] = {
        "xargs -P": f"{seq} | xargs -P{jobs} -I{{}} {command}",
        "make -j": ["make", "-s", f"-j{jobs}", "-f", str(_makefile(folder, n, command))],
        # the program, not a shell builtin: every peer starts a process per task
        "shell loop": f"for i in $({seq}); do {_program(command)}; done",
    }
    if shutil.which("parallel"):  # -N0: read an input line but do not append it to the command
        peers["GNU parallel"] = f"{seq} | parallel -N0 -j{jobs} '{command}' >/dev/null"
    return peers


def _program(command: str) -> str:
    name, _, rest = command.partition(" ")
    return f"{shutil.which(name) or name} {rest}".strip()


def batch(folder: Path, n: int, command: str, jobs: int, env: dict[str, str]) -> list[Row]:
    rows: list[Row] = []
    repeat = 1 if command.startswith("sleep") else 3  # a sleep batch hardly varies: spare the time
    for throttle in (False, True):
        t = _time_novaproc(_tasks_file(folder, n, command.split(), throttle=throttle), jobs, env, repeat)
        label = "novaproc" + (" (default throttle)" if throttle else "")
        rows.append((f"{n} x {command} -j{jobs}: {label}", t, "s"))
        _progress(rows[-1])
    ours = rows[0][1]
    for name, cmd in _peers(folder, n, command, jobs).items():
        t = _time(cmd, repeat=repeat)
        rows.append((f"{n} x {command} -j{jobs}: {name}", t, f"s (novaproc/{name} = {ours / t:.2f}x)"))
        _progress(rows[-1])
    if command.startswith("sleep"):
        ideal = n * float(command.split()[1]) / jobs
        rows.append((f"{n} x {command} -j{jobs}: ideal", ideal,
                     f"s (novaproc {100 * (ours / ideal - 1):+.1f}% over ideal)"))
    else:
        rows.append((f"{n} x {command} -j{jobs}: novaproc per task", 1000 * ours / n, "ms"))
    return rows


def throttle_cost(folder: Path, env: dict[str, str], quick: bool) -> list[Row]:
    """As many CPU-bound tasks at once as cores, with the default limits and with none: the
    throttle sees our own tasks as load, and must not leave a core idle when one ends."""
    jobs = os.cpu_count() or 1
    n, spin = jobs * (2 if quick else 6), "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"
    times = [_time_novaproc(_tasks_file(folder, n, ["sh", "-c", spin], throttle=throttle, name="spin"),
                            jobs, env) for throttle in (False, True)]
    label = f"{n} x CPU-bound -j{jobs}"
    rows = [(f"{label}: novaproc", times[0], "s"),
            (f"{label}: novaproc (default throttle)", times[1],
             f"s (default throttle / none = {times[1] / times[0]:.2f}x)")]
    for row in rows:
        _progress(row)
    return rows


def _progress(row: Row) -> None:
    print(f"  {row[0]}: {row[1]:.3f} {row[2]}", file=sys.stderr, flush=True)


def _first_task_latency(folder: Path, env: dict[str, str], *, cached: bool, repeat: int = 5) -> float:
    """Best time from launching `novaproc run` to its one task running (the task stamps it).
    Not `cached`: each run reads and validates the tasks file as if for the first time."""
    stamp = folder / "stamp"
    tasks = folder / "stamp.toml"
    tasks.write_text(f'[run]\nisolation = "none"\n[tasks.stamp]\ncmd = "date +%s.%N > {stamp}"\n')
    best = float("inf")
    for i in range(repeat):
        run_env = env if cached else {**env, "XDG_CACHE_HOME": str(folder / f"fresh-cache-{i}")}
        launched = time.time()
        subprocess.run([sys.executable, "-m", "novaproc", "run", "-q", str(tasks)], env=run_env,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        best = min(best, float(stamp.read_text()) - launched)
    return best


def startup(folder: Path, env: dict[str, str]) -> list[Row]:
    one = _tasks_file(folder, 1, ["true"], throttle=False)
    return [
        ("start-up: novaproc run, launch to its first task", _first_task_latency(folder, env, cached=True),
         "s"),
        ("start-up: the same, tasks file not seen before",
         _first_task_latency(folder, env, cached=False), "s"),
        ("start-up: novaproc --version",
         _time([sys.executable, "-m", "novaproc", "--version"], repeat=5), "s"),
        ("start-up: novaproc plan (1 task)", _time([sys.executable, "-m", "novaproc", "plan", str(one)],
                                                   env=env, repeat=5), "s"),
        ("start-up: novaproc run (1 x true)", _time([sys.executable, "-m", "novaproc", "run", "-q",
                                                     str(one)], env=env, repeat=5), "s"),
        ("start-up: python -c pass", _time([sys.executable, "-c", "pass"], repeat=5), "s"),
    ]


def peak_memory(folder: Path, env: dict[str, str]) -> list[Row]:
    if not Path("/usr/bin/time").exists():
        return [("supervisor peak RSS", float("nan"), "(needs /usr/bin/time)")]
    tasks = _tasks_file(folder, 1000, ["true"], throttle=False)
    out = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "novaproc", "run", "-q",
                          "-j4", str(tasks)], env=env, capture_output=True, text=True, check=True)
    return [("supervisor peak RSS, 1,000 tasks -j4", int(out.stderr.strip().splitlines()[-1]) / 1024, "MiB")]


def sampling_cost() -> list[Row]:
    import psutil

    from novaproc.execution.throttle import PsutilSampler

    sampler = PsutilSampler(min_span=0.0)
    n = 200
    start = time.perf_counter()
    for _ in range(n):
        sampler()
    per_sample = (time.perf_counter() - start) / n
    me = psutil.Process()
    start = time.perf_counter()
    for _ in range(n):
        me.children(recursive=True)
    per_scan = (time.perf_counter() - start) / n
    return [("throttle sample (cpu + memory)", per_sample * 1e3, "ms; at 2 Hz "
             f"{per_sample * 2 * 100:.3f}% of a core"),
            ("recursive children() scan", per_scan * 1e3, "ms")]


def run(quick: bool = False) -> list[Row]:
    folder = Path(tempfile.mkdtemp(prefix="nova-bench-"))
    env = {**os.environ, "NOVA_STATE_DIR": str(folder / "state"), "XDG_CACHE_HOME": str(folder / "cache")}
    rows = startup(folder, env)
    for jobs in (2, 4):
        rows += batch(folder, 200 if quick else 1000, "true", jobs, env)
        rows += batch(folder, 50 if quick else 200, "sleep 0.05", jobs, env)
    rows += throttle_cost(folder, env, quick)
    rows += peak_memory(folder, env)
    rows += sampling_cost()
    shutil.rmtree(folder, ignore_errors=True)
    return rows


def main() -> None:
    for name, value, unit in run("--quick" in sys.argv):
        print(f"{name:<52} {value:10.3f} {unit}")


if __name__ == "__main__":
    main()
