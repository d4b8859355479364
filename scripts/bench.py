"""novaproc's benchmarks, side by side with its peers, in one run.

    python scripts/bench.py [--quick] [section ...]     sections: run plan scale locks git each dask

Each section is a scripts/bench_<name>.py module with `run() -> [(name, value, unit)]`.
Results belong in BENCHMARKS.md, with the machine they were measured on.
"""

from __future__ import annotations

import compileall
import importlib
import os
import platform
import sys
import time
from pathlib import Path

SECTIONS = ("run", "plan", "locks", "git", "each", "dask")


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    quick = "--quick" in argv
    wanted = [a for a in argv if not a.startswith("-")] or list(SECTIONS)
    print(f"# novaproc benchmarks, {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}")
    # as an installed package has it: without bytecode (PYTHONDONTWRITEBYTECODE, a fresh editable
    # install) every start would compile novaproc's modules again, some 0.1 s
    compileall.compile_dir(Path(__file__).parent.parent / "novaproc", quiet=1)
    for section in wanted:
        try:
            module = importlib.import_module(f"bench_{section}")
        except ModuleNotFoundError:
            print(f"\n## {section}: no scripts/bench_{section}.py")
            continue
        print(f"\n## {section}", flush=True)
        started = time.perf_counter()
        rows = module.run(quick) if "quick" in module.run.__code__.co_varnames else module.run()
        for name, value, unit in rows:
            print(f"{name:<56} {value:10.3f} {unit}", flush=True)
        print(f"({time.perf_counter() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
