"""Fixtures for the whole suite; the helpers they are built on live in tests/support/.

Test modules import helpers from there (`from support.cli import run_cli`): pytest puts this
folder, tests/, on sys.path for this conftest, so `support` is importable from every subfolder.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from support.cli import run_cli
from support.cluster import Cluster
from support.repo import make_repo
from support.sandbox import Sandbox
from support.tasks import write_tasks


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """novaproc caches validated inputs under XDG_CACHE_HOME: keep the suite's out of ~/.cache."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(autouse=True)
def _private_run_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """novaproc indexes runs under XDG_STATE_HOME, and a run id is unique in the index: each
    test gets its own, out of ~/.local/state, so tests that pick their run ids do not clash."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli


@pytest.fixture
def tasks_file(tmp_path: Path) -> Callable[..., Path]:
    """write_tasks bound to this test's tmp_path."""
    return lambda text, name="tasks.toml": write_tasks(tmp_path, text, name)


@pytest.fixture
def git_repo(tmp_path: Path) -> Callable[..., Path]:
    """make_repo bound to this test's tmp_path: git_repo(files, name="repo", commit=True)."""
    def make(files: Mapping[str, str] | None = None, name: str = "repo", *, commit: bool = True) -> Path:
        return make_repo(tmp_path / name, files, commit=commit)
    return make


@pytest.fixture
def isolated_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """git as on a fresh machine: no user or system config, no GIT_DIR from the caller."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Sandbox]:
    """A Sandbox for the end-to-end tests: the real CLI, its own state."""
    sandbox = Sandbox(tmp_path)
    yield sandbox
    sandbox.close()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A Dask cluster of two single-threaded worker processes on 127.0.0.1, for the session."""
    pytest.importorskip("distributed")
    made = Cluster(tmp_path_factory.mktemp("dask"))
    yield made
    made.close()
