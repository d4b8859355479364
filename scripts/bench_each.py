"""Benchmark of fan-out: `novaproc each` beside `novaproc run` of the same tasks written by hand,
xargs -P and GNU parallel, in one run; and how long expanding and planning a `foreach` over a
repository's files takes, at 1,000 and 10,000 files.

    python scripts/bench.py each      (or: python scripts/bench_each.py [--quick])
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_run import _time

Row = tuple[str, float, str]
NOVA = [sys.executable, "-m", "novaproc"]
NO_THROTTLE = "cpu_limit = 100\nmemory_limit = 100\n"


def dispatch(folder: Path, n: int, jobs: int, env: dict[str, str]) -> list[Row]:
    """`n` x `true ITEM`, isolation none (a folder outside git), through each tool."""
    work = folder / f"dispatch-{n}"
    work.mkdir()
    (work / "nova.toml").write_text(NO_THROTTLE)
    items = work / "items"
    items.write_text("".join(f"{i}\n" for i in range(n)))
    tasks = work / "tasks.toml"
    tasks.write_text("".join(f'[tasks.t{i}]\ncmd = ["true", "{i}"]\n' for i in range(n)))
    each = [*NOVA, "each", "-q", f"-j{jobs}", "--from", str(items), "--", "true"]
    run = [*NOVA, "run", "-q", f"-j{jobs}", str(tasks)]
    for warm in (each, [*NOVA, "plan", str(tasks)]):  # both read their tasks file once before
        subprocess.run(warm, cwd=work, env=env, check=True, stdout=subprocess.DEVNULL)
    times = {"novaproc each": _timed(each, work, env), "novaproc run": _timed(run, work, env),
             "xargs -P": _timed(f"xargs -P{jobs} -n1 true < {items}", work, env)}
    if shutil.which("parallel"):
        times["GNU parallel"] = _timed(f"parallel -j{jobs} true < {items}", work, env)
    ours = times["novaproc each"]
    return [(f"{n} x true -j{jobs}: {name}", t, "s" if name == "novaproc each"
             else f"s (each/{name} = {ours / t:.2f}x)") for name, t in times.items()]


def _timed(cmd: list[str] | str, cwd: Path, env: dict[str, str]) -> float:
    here = os.getcwd()
    os.chdir(cwd)
    try:
        return _time(cmd, env=env)
    finally:
        os.chdir(here)


def expansion(folder: Path, files: int, env: dict[str, str]) -> list[Row]:
    """`plan` of one `foreach` over a repository of `files` tracked files in 100 folders: read and
    validated for the first time (no input cache), and again (the file cached, the glob not)."""
    repo = folder / f"repo-{files}"
    per = max(1, files // 100)
    for d in range(100):
        (repo / "src" / f"d{d}").mkdir(parents=True)
        for f in range(per):
            (repo / "src" / f"d{d}" / f"f{f}.py").write_text("x = 1\n")
    (repo / "tasks.toml").write_text('[tasks.fmt]\nforeach = "src/**/*.py"\ncmd = ["ruff", "format", '
                                     '"{}"]\nwrites = ["{}"]\n')
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=b", "-c", "user.email=b@b",
                                                 "commit", "-qm", "files"]):
        subprocess.run(["git", *args], cwd=repo, check=True)
    plan = [*NOVA, "plan", str(repo / "tasks.toml")]
    cold = min(_once(plan, {**env, "XDG_CACHE_HOME": str(folder / f"cold-{files}-{i}")})
               for i in range(3))
    warm = _time(plan, env=env)
    rss = _peak_rss(plan, env)
    return [(f"foreach over {files:,} files: plan, first reading", cold, "s"),
            (f"foreach over {files:,} files: plan, file read before", warm, "s"),
            (f"foreach over {files:,} files: plan peak RSS", rss, "MiB")]


def _once(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _peak_rss(cmd: list[str], env: dict[str, str]) -> float:
    if not Path("/usr/bin/time").exists():
        return float("nan")
    out = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], env=env, capture_output=True, text=True,
                         check=True)
    return int(out.stderr.strip().splitlines()[-1]) / 1024


def live_view_cost(folder: Path, tasks: int = 1000) -> list[Row]:
    """What the live view costs the supervisor at 1,000 tasks: handling their events, and
    drawing one 40-line frame (rich redraws 4 a second)."""
    import io

    from rich.console import Console

    from novaproc.cli.live import LiveView
    from novaproc.messages import Event, TaskChanged, TaskState

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    view = LiveView(Terminal(), io.StringIO(), tasks, lambda t: folder / f"{t}.log", {}, {}, slots=4)
    view.stop()
    started = time.process_time()
    for i in range(tasks):  # all done but 4 running and 96 waiting for a lock
        state = (TaskState.DONE if i < tasks - 100 else TaskState.RUNNING if i < tasks - 96
                 else TaskState.WAITING)
        changed = TaskChanged(state, duration=0.1, reason="lock on x held by run a")
        view.handle(Event("r", 0.0, changed, f"t{i}"))
    events = time.process_time() - started
    console = Console(file=io.StringIO(), width=120, height=40, force_terminal=True)
    started, frames = time.process_time(), 100
    for _ in range(frames):
        console.print(view._render())
    frame = (time.process_time() - started) / frames
    return [(f"live view, {tasks:,} tasks: events handled", events * 1000, "ms in all"),
            (f"live view, {tasks:,} tasks: one frame", frame * 1000,
             f"ms; at 4 frames a second {frame * 400:.1f}% of a core")]


def run(quick: bool = False) -> list[Row]:
    folder = Path(tempfile.mkdtemp(prefix="nova-bench-each-"))
    env = {**os.environ, "XDG_CACHE_HOME": str(folder / "cache"), "GIT_CONFIG_GLOBAL": "/dev/null"}
    rows: list[Row] = []
    for n in (1_000,) if quick else (1_000, 10_000):
        rows += expansion(folder, n, env)
    rows += dispatch(folder, 200 if quick else 1_000, 2, env)
    rows += live_view_cost(folder)
    shutil.rmtree(folder, ignore_errors=True)
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    for name, value, unit in run("--quick" in sys.argv):
        print(f"{name:<52} {value:10.3f} {unit}")
