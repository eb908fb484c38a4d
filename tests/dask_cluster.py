"""A real Dask cluster for tests: ``dask scheduler`` and ``dask worker`` as separate processes on
localhost, started the way the README tells people to start them on their own machines."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """A running scheduler and its workers (each ``dask worker`` process with its nanny)."""

    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen] = field(default_factory=list)
    log_dir: Path | None = None

    def add_worker(self, *, memory_limit: str = "4GiB", nworkers: int = 1) -> subprocess.Popen:
        """Start one ``dask worker`` process (``nworkers`` workers under it) and wait until they joined."""
        from distributed import Client

        with Client(self.address, timeout="10s") as client:
            before = len(client.scheduler_info()["workers"])
        log = open(self.log_dir / f"worker-{len(self.workers)}.log", "wb") if self.log_dir else subprocess.DEVNULL
        proc = subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", self.address, "--nthreads", "1", "--nworkers", str(nworkers),
             "--memory-limit", memory_limit, "--preload", "core.learning.worker", "--no-dashboard",
             "--host", HOST],
            cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.workers.append(proc)
        with Client(self.address, timeout="10s") as client:
            client.wait_for_workers(before + nworkers, timeout=60)
        return proc

    def worker_pids(self) -> list[int]:
        """The worker processes' pids (not their nannies'), as the scheduler reports them."""
        from distributed import Client

        with Client(self.address, timeout="10s") as client:
            return [int(pid) for pid in client.run(os.getpid).values()]

    def stop(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in [*self.workers, self.scheduler]:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def _env() -> dict:
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # A run whose worker dies fails at once instead of being retried elsewhere (as in the README).
    env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = "0"
    return env


def start_cluster(log_dir: Path | None = None, *, workers: int = 1, memory_limit: str = "4GiB") -> Cluster:
    """Start ``dask scheduler`` and ``workers`` ``dask worker`` processes; returns when all joined."""
    port = _free_port()
    log = open(log_dir / "scheduler.log", "wb") if log_dir else subprocess.DEVNULL
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "dask", "scheduler", "--host", HOST, "--port", str(port), "--no-dashboard"],
        cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    cluster = Cluster(f"tcp://{HOST}:{port}", scheduler, log_dir=log_dir)
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=1):
                break
        except OSError:
            if scheduler.poll() is not None or time.monotonic() > deadline:
                cluster.stop()
                raise RuntimeError("the Dask scheduler did not start")
            time.sleep(0.2)
    for _ in range(workers):
        cluster.add_worker(memory_limit=memory_limit)
    return cluster
