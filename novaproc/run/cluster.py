"""A run's executor: the local worker pool, or a Dask cluster (with the pool beside it for the
tasks that stay on this machine), its shipping of commits wired to the run's repository.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from novaproc.execution.pool import WorkerPool
from novaproc.inputs.settings import Settings
from novaproc.inputs.taskfile import TaskFile
from novaproc.planning.plan import Plan

if TYPE_CHECKING:
    from novaproc.execution.interface import Executor
    from novaproc.isolation.preflight import Preflight


def make_executor(taskfile: TaskFile, settings: Settings, plan: Plan, checked: Preflight | None,
                  run_id: str) -> tuple[Executor, WorkerPool]:
    """The run's executor and its local pool (the same object for a local run). The pool comes
    first: its forkserver must start before Dask's threads exist. Raises EnvironmentFault when
    the scheduler cannot be reached (the CLI made sure the tasks file is in git)."""
    # a subreaper's adopted orphans are killed wholesale: never with a local cluster's processes below
    pool = WorkerPool(settings.max_parallel, settings.kill_grace, adopt_orphans=settings.executor == "local")
    if settings.executor == "local":
        return pool, pool
    from novaproc.execution.dask import DaskExecutor
    from novaproc.isolation.shipping import Shipper

    shipper = Shipper(checked.repo if checked else None, checked.base if checked else None,
                      root=taskfile.root, run_id=run_id, labels={t.id: t.label for t in plan.tasks},
                      setup=settings.worktree_setup, include=settings.worktree_include,
                      limits=(settings.cpu_limit, settings.memory_limit))  # the load of each worker's machine
    try:
        return DaskExecutor(settings.scheduler or "", pool, shipper, settings.kill_grace), pool
    except BaseException:
        pool.shutdown()
        raise
