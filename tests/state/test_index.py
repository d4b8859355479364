"""The user's run index: a run id found from any folder, unique for the user, pruned of runs
whose state dir is gone. Real journals in tmp_path; XDG_STATE_HOME is the session's (conftest)."""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import pytest

from novaproc.errors import UsageError
from novaproc.state import index
from novaproc.state.format import RunMeta
from novaproc.state.journal import Journal
from novaproc.state.reader import list_indexed, load_run


@pytest.fixture(autouse=True)
def _own_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))


def _run(state: Path, new_id=None) -> str:
    meta = RunMeta(tasks_file=str(state.parent / "tasks.toml"), root=str(state.parent))
    kwargs = {"new_id": new_id} if new_id else {}
    with Journal.create(state, meta, **kwargs) as journal:
        return journal.run_id


def test_a_run_is_found_by_id_from_any_state_dir(tmp_path: Path) -> None:
    run_id = _run(tmp_path / "repo-a" / ".nova")
    elsewhere = tmp_path / "elsewhere" / ".nova"
    assert load_run(elsewhere, run_id).id == run_id
    assert load_run(elsewhere, run_id[:4]).id == run_id  # a unique prefix too
    assert (tmp_path / "xdg" / "novaproc" / "runs" / run_id).is_symlink()
    assert oct((tmp_path / "xdg" / "novaproc" / "runs").stat().st_mode & 0o777) == "0o700"


def test_an_id_is_unique_for_the_user_across_state_dirs(tmp_path: Path) -> None:
    ids = itertools.chain(["abc123", "abc123", "def456"])
    first = _run(tmp_path / "a" / ".nova", new_id=lambda: next(ids))
    second = _run(tmp_path / "b" / ".nova", new_id=lambda: next(ids))
    assert (first, second) == ("abc123", "def456")
    assert not (tmp_path / "b" / ".nova" / "runs" / "abc123").exists()


def test_runs_whose_state_dir_is_gone_are_pruned_and_their_ids_free(tmp_path: Path) -> None:
    kept, gone = _run(tmp_path / "a" / ".nova"), _run(tmp_path / "b" / ".nova")
    assert {r.id for r in list_indexed()} == {kept, gone}
    shutil.rmtree(tmp_path / "b")
    assert [r.id for r in list_indexed()] == [kept]
    assert sorted(p.name for p in (tmp_path / "xdg" / "novaproc" / "runs").iterdir()) == [kept]
    with pytest.raises(UsageError, match="unknown run"):
        load_run(tmp_path / "a" / ".nova", gone)
    again = iter([gone])
    assert _run(tmp_path / "c" / ".nova", new_id=lambda: next(again)) == gone


def test_an_unusable_index_never_fails_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "xdg").write_text("a file where the index folder would be")
    run_id = _run(tmp_path / "a" / ".nova")
    assert load_run(tmp_path / "a" / ".nova", run_id).id == run_id
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.delenv("HOME")
    assert index.index_dir(os.environ) is None and index.register("x1", tmp_path) is True


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a run folder to another user")
def test_a_run_folder_of_another_user_is_not_found_through_the_index(tmp_path: Path) -> None:
    state = tmp_path / "theirs" / ".nova"
    run_id = _run(state)
    for path in (state, state / "runs", state / "runs" / run_id):
        os.chown(path, 65534, 65534)  # nobody's now: their journal, their commands
    with pytest.raises(UsageError, match="unknown run"):
        load_run(tmp_path / "mine" / ".nova", run_id)
    assert list_indexed() == []


def test_an_index_others_can_write_is_not_read(tmp_path: Path) -> None:
    run_id = _run(tmp_path / "a" / ".nova")
    (tmp_path / "xdg" / "novaproc" / "runs").chmod(0o777)
    with pytest.raises(UsageError, match="unknown run"):
        load_run(tmp_path / "elsewhere" / ".nova", run_id)
