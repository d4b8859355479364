"""A Dask cluster for tests: a LocalCluster of real worker processes on 127.0.0.1 (novaproc's own
`local_cluster`), held by a process of its own so that the test process starts no Dask thread.
Its workers keep their clones under the cluster's own TMPDIR: the suite leaves nothing in /tmp."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil

from support.waiting import wait_until

HOLD = """
import sys
from novaproc.execution.dask import local_cluster
cluster = local_cluster(int(sys.argv[1]))
with open(sys.argv[2] + ".new", "w") as f:
    f.write(cluster.scheduler_address)
__import__("os").rename(sys.argv[2] + ".new", sys.argv[2])
sys.stdin.read()  # until the test session closes it
cluster.close()
"""


class Cluster:
    def __init__(self, folder: Path, workers: int = 2) -> None:
        self.folder, self.workers = folder, workers
        self.tmp = folder / "tmp"
        self.tmp.mkdir(parents=True)
        file = folder / "address"
        self._proc = subprocess.Popen([sys.executable, "-c", HOLD, str(workers), str(file)],
                                      env={**os.environ, "TMPDIR": str(self.tmp)}, stdin=subprocess.PIPE,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True)
        wait_until(file.exists, "the cluster's address", 60)
        self.address = file.read_text()
        wait_until(lambda: len(self.worker_processes()) == workers, "the workers", 60)

    def worker_processes(self) -> list[psutil.Process]:
        """The Dask worker processes, which the nannies start."""
        return [w for w in psutil.Process(self._proc.pid).children() if "spawn_main" in " ".join(w.cmdline())]

    def clones(self) -> Path:
        return self.tmp / f"novaproc-cluster-{os.getuid()}"

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, 9)
            self._proc.wait()
