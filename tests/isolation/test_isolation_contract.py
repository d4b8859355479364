"""One contract, run over every Isolation (novaproc/isolation/interface.py): in place and git
worktrees, each built on a real repository in tmp_path. A new implementation is tested by adding
its builder to ISOLATIONS. Where the implementations differ, the tests at the end say how."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.repo import is_ancestor, make_repo, rev, show

from novaproc.errors import ExitCode
from novaproc.inputs.settings import Settings
from novaproc.inputs.taskfile import Task
from novaproc.isolation.interface import Finish, InPlace, Isolation, Landing
from novaproc.isolation.preflight import preflight
from novaproc.isolation.worktree_isolation import WorktreeIsolation
from novaproc.messages import LandingStarted, Phase

pytestmark = pytest.mark.usefixtures("isolated_git")

FILES = {"tracked.txt": "tracked\n", "src/m.py": "x = 1\n"}
WRITES = Task("writer", cmd="echo written > out.txt", writes=("out.txt",))
IDLE = Task("idle", cmd="true")


@dataclass
class Subject:
    """An Isolation under test and the repository its tasks' files come from."""

    isolation: Isolation
    root: Path


def in_place(tmp_path: Path) -> Subject:
    root = make_repo(tmp_path / "repo", FILES)
    return Subject(InPlace(root), root)


def worktree(tmp_path: Path) -> Subject:
    root = make_repo(tmp_path / "repo", FILES)
    checked = preflight(root, target=None, merge="auto")
    settings = Settings(worktree_dir=str(tmp_path / "wt"))
    return Subject(WorktreeIsolation(checked, settings, "r1", tmp_path / "logs"), root)


ISOLATIONS: dict[str, Callable[[Path], Subject]] = {
    "in_place": in_place,
    "worktree": worktree,
}


@pytest.fixture(params=sorted(ISOLATIONS))
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    built = ISOLATIONS[request.param](tmp_path)
    yield built
    built.isolation.close()  # whatever the test did (close may be called more than once)


def run_task(task: Task, folder: Path) -> None:
    """The task's command in `folder`, as a worker would run it."""
    assert isinstance(task.cmd, str)
    subprocess.run(["/bin/sh", "-c", task.cmd], cwd=folder, check=True)


announced: list[LandingStarted] = []  # what the isolations announce before they touch a checkout


def no_rerun(task_id: str, new_base: str) -> str | None:
    raise AssertionError(f"nothing conflicts, yet {task_id} was to run again on {new_base}")


# ---------------------------------------------------------------- the contract


def test_prepare_gives_an_existing_folder_holding_the_repositorys_files(subject: Subject) -> None:
    folder = subject.isolation.prepare(WRITES, [])
    assert folder.is_dir()
    assert (folder / "tracked.txt").read_text() == "tracked\n"
    assert (folder / "src" / "m.py").read_text() == "x = 1\n"


def test_the_task_runs_in_the_prepared_folder(subject: Subject) -> None:
    folder = subject.isolation.prepare(WRITES, [])
    run_task(WRITES, folder)
    assert (folder / "out.txt").read_text() == "written\n"


def test_a_successful_task_that_wrote_a_file_finishes_without_a_problem(subject: Subject) -> None:
    run_task(WRITES, subject.isolation.prepare(WRITES, []))
    finish = subject.isolation.finish(WRITES, ok=True)
    assert isinstance(finish, Finish)
    assert finish.problem is None


def test_a_successful_task_that_changed_nothing_has_no_result(subject: Subject) -> None:
    run_task(IDLE, subject.isolation.prepare(IDLE, []))
    finish = subject.isolation.finish(IDLE, ok=True)
    assert isinstance(finish, Finish)
    assert (finish.commit, finish.problem) == (None, None)


def test_a_failed_task_finishes_without_a_commit(subject: Subject) -> None:
    run_task(WRITES, subject.isolation.prepare(WRITES, []))
    finish = subject.isolation.finish(WRITES, ok=False)
    assert isinstance(finish, Finish)
    assert finish.commit is None


def test_landing_no_results_is_ok(subject: Subject) -> None:
    landing = subject.isolation.land([], no_rerun, announced.append)
    assert isinstance(landing, Landing)
    assert landing.exit_code == ExitCode.OK


def test_close_returns_a_list_and_may_come_after_everything(subject: Subject) -> None:
    iso = subject.isolation
    run_task(WRITES, iso.prepare(WRITES, []))
    finish = iso.finish(WRITES, ok=True)
    iso.land([(WRITES.id, finish.commit)] if finish.commit else [], no_rerun, announced.append)
    notes = iso.close()
    assert isinstance(notes, list)
    assert all(isinstance(note, str) for note in notes)


# ---------------------------------------------------------------- where they differ


def test_in_place_runs_tasks_in_the_repository_and_keeps_no_result(tmp_path: Path) -> None:
    subject = in_place(tmp_path)
    folder = subject.isolation.prepare(WRITES, [])
    assert folder == subject.root
    run_task(WRITES, folder)
    assert subject.isolation.finish(WRITES, ok=True).commit is None
    assert (subject.root / "out.txt").read_text() == "written\n"  # the change is simply there
    assert subject.isolation.close() == []


def test_worktree_runs_a_task_elsewhere_and_lands_its_commit_on_the_branch(tmp_path: Path) -> None:
    subject = worktree(tmp_path)
    iso, root = subject.isolation, subject.root
    base = rev(root, "main")
    folder = iso.prepare(WRITES, [])
    assert folder.resolve() != root.resolve()
    run_task(WRITES, folder)
    assert not (root / "out.txt").exists()  # the change stays in the task's folder until it lands

    finish = iso.finish(WRITES, ok=True)
    assert finish.commit is not None and finish.problem is None
    assert show(root, finish.commit, "out.txt") == "written\n"
    assert rev(root, "main") == base  # finishing moves nothing yet

    said: list[LandingStarted | Phase] = []
    landing = iso.land([(WRITES.id, finish.commit)], no_rerun, said.append)
    assert landing.exit_code == ExitCode.OK
    tip = rev(root, "main")
    assert tip != base and is_ancestor(root, base, tip)
    # announced (for the journal) before the checkout moved: a crash half-way can be finished
    assert said == [Phase("merge", "merging 1 result(s) into main"),
                    LandingStarted("refs/heads/main", base, tip, str(root))]
    assert show(root, "main", "out.txt") == "written\n"
    assert iso.close() == []


def test_worktree_keeps_a_failed_tasks_folder_and_close_names_it(tmp_path: Path) -> None:
    subject = worktree(tmp_path)
    folder = subject.isolation.prepare(WRITES, [])
    run_task(WRITES, folder)
    assert subject.isolation.finish(WRITES, ok=False).commit is None
    notes = subject.isolation.close()
    assert notes == [f"kept for inspection: {folder}"]
    assert (folder / "out.txt").read_text() == "written\n"
