"""The guardian of the run's own commands (novaproc.guard): real processes, no fakes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support.processes import assert_gone, marker, sleepers
from support.waiting import wait_until

from novaproc.execution import guard
from novaproc.execution.guard import Ending, run_guarded


def test_exit_code_and_output_come_back(tmp_path: Path) -> None:
    code, out = run_guarded(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], cwd=tmp_path,
                            stdout=subprocess.PIPE)
    assert (code, out) == (3, b"out\nerr\n")
    assert run_guarded(["true"], cwd=tmp_path, stdout=subprocess.DEVNULL)[0] == 0


def test_the_guardian_imports_this_very_novaproc() -> None:
    # the folder it puts first on sys.path holds this module, under the name it imports it by
    module = Path(guard._OURS, *guard.__name__.split(".")).with_suffix(".py")
    assert module == Path(guard.__file__).resolve()
    assert f"from {guard.__name__} import guardian_main;" in guard._GUARDIAN


def test_a_missing_program_is_127(tmp_path: Path) -> None:
    code, out = run_guarded(["no-such-program-here"], cwd=tmp_path, stdout=subprocess.PIPE)
    assert code == 127 and b"cannot start no-such-program-here" in out


def both_sleeping(mark: str) -> bool:
    return len(sleepers(mark)) == 2


def test_a_timeout_ends_the_whole_tree(tmp_path: Path) -> None:
    mark = marker()
    code, _ = run_guarded(["/bin/sh", "-c", f"setsid sleep {mark} & sleep {mark} & touch began; wait"],
                          cwd=tmp_path, stdout=subprocess.DEVNULL, timeout=3, ending=Ending(grace=1.0))
    assert code is None and (tmp_path / "began").exists()
    assert_gone(mark, timeout=5)


def test_a_stopping_run_ends_the_whole_tree_without_waiting_for_it(tmp_path: Path) -> None:
    mark = marker()
    asked: list[bool] = []

    def stop() -> bool:  # the run stops once both sleeps are seen running
        asked.append(both_sleeping(mark))
        return asked[-1]

    code, _ = run_guarded(["/bin/sh", "-c", f"setsid sleep {mark} & sleep {mark}"], cwd=tmp_path,
                          stdout=subprocess.DEVNULL, ending=Ending(stop, grace=1.0))
    assert code is None and asked[-1]
    assert_gone(mark, timeout=5)


def test_a_novaproc_in_the_commands_folder_is_not_the_one_that_runs(tmp_path: Path) -> None:
    (tmp_path / "novaproc").mkdir()  # as in a worktree of novaproc itself, or of an older commit
    (tmp_path / "novaproc" / "__init__.py").write_text("raise SystemExit('the wrong novaproc')\n")
    assert run_guarded(["/bin/sh", "-c", "echo ok"], cwd=tmp_path, stdout=subprocess.PIPE) == (0, b"ok\n")


def test_the_command_dies_with_a_killed_caller(tmp_path: Path) -> None:
    mark = marker()
    caller = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys\n"
        "from pathlib import Path\n"
        "from novaproc.execution.guard import Ending, run_guarded\n"
        f"run_guarded(['/bin/sh', '-c', 'setsid sleep {mark} & sleep {mark}'], cwd=Path('.'),"
        " stdout=subprocess.DEVNULL)\n")], cwd=tmp_path)
    try:
        wait_until(lambda: both_sleeping(mark), "both sleeps to run", timeout=10, every=0.05)
    finally:
        caller.kill()  # SIGKILL: the caller cannot clean up; the guardian must
        caller.wait()
    assert_gone(mark)
