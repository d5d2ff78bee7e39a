"""Fault tests with real worker processes against the real database.

Workers are separate processes started from the worker forkserver (``pool``), exactly as
``circuitreg worker --processes N`` starts them; one test runs the ``circuitreg worker``
command itself. Each test: a real (tiny) discovery job on a real toy checkpoint, a 2 s lease.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from circuitreg.services.db.base import make_engine
from circuitreg.services.queue import JobQueue, JobRecord
from circuitreg.services.stores.embedded import EmbeddedStore
from circuitreg.services.stores.types import CircuitFilter
from circuitreg.workers.runtime.pool import start_worker_processes

from .runtime_support import discovery_spec, migrate, tiny_toy_checkpoint

LEASE_SECONDS = 2.0


class Cluster:
    """A database, a toy checkpoint, the workers' settings, and the processes started."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        migrate(url)
        self.url = url
        self.queue = JobQueue(make_engine(url))
        self.checkpoint = tiny_toy_checkpoint(tmp_path / "toy")
        self.env = {
            "CIRCUITREG_DATABASE_URL": url,
            "CIRCUITREG_DATA_DIR": str(tmp_path / "worker-data"),
            "CIRCUITREG_DEVICE": "cpu",
            "CIRCUITREG_WORKER_LEASE_SECONDS": str(LEASE_SECONDS),
            "CIRCUITREG_WORKER_POLL_SECONDS": "0.1",
            "CIRCUITREG_JOB_RETRY_BASE_SECONDS": "0.2",
            "CIRCUITREG_JOB_MAX_ATTEMPTS": "3",
        }
        self.processes: list[BaseProcess] = []

    def start(self, *worker_ids: str) -> list[BaseProcess]:
        started = start_worker_processes(len(worker_ids), env=self.env, worker_ids=list(worker_ids))
        self.processes.extend(started)
        return started

    def wait_for(
        self, job_id: str, done: Callable[[JobRecord], bool], timeout: float = 90
    ) -> JobRecord:
        deadline = time.monotonic() + timeout
        job = self.queue.get(job_id)
        while job is not None and time.monotonic() < deadline:
            if done(job):
                return job
            time.sleep(0.02)
            job = self.queue.get(job_id)
        raise AssertionError(f"job {job_id} not done after {timeout} s: {job}")

    def circuits(self) -> int:
        store = EmbeddedStore(self.url)
        try:
            return len(store.list_circuits(CircuitFilter(), first=100).items)
        finally:
            store.close()

    def close(self) -> None:
        for proc in self.processes:
            if proc.exitcode is None and proc.pid is not None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.join(10)
        self.queue.engine.dispose()


@pytest.fixture
def cluster(postgres_url: str, tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(postgres_url, tmp_path)
    try:
        yield made
    finally:
        made.close()


@pytest.mark.postgres
def test_runtime_sigkilled_worker_job_finishes_elsewhere_once(cluster: Cluster) -> None:
    workers = {p.name: p for p in cluster.start("wa", "wb")}
    job = cluster.queue.enqueue(discovery_spec(str(cluster.checkpoint), seed=3))
    running = cluster.wait_for(job.id, lambda j: j.status == "running")
    victim = workers[running.lease_owner or ""]
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGSTOP)  # freeze it mid-job, then make sure it is mid-job
    frozen = cluster.queue.get(job.id)
    assert frozen is not None and frozen.status == "running", "job ended before the kill"
    os.kill(victim.pid, signal.SIGKILL)
    victim.join(10)
    assert victim.exitcode == -signal.SIGKILL

    done = cluster.wait_for(job.id, lambda j: j.is_final)
    assert done.status == "succeeded", done.error
    assert done.lease_owner != running.lease_owner and done.attempts == 2
    events = cluster.queue.events(job.id)
    expired = [e for e in events if e.event == "lease_expired"]
    assert [e.worker_id for e in expired] == [running.lease_owner]
    assert done.result is not None and cluster.circuits() == 1


@pytest.mark.postgres
def test_runtime_worker_survives_dropped_database_connections(
    cluster: Cluster, postgres_url: str
) -> None:
    admin_url = os.environ["CIRCUITREG_TEST_POSTGRES_URL"]
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    database = make_url(postgres_url).database
    try:
        cluster.start("wd")
        first = cluster.queue.enqueue(discovery_spec(str(cluster.checkpoint), seed=4))
        cluster.wait_for(first.id, lambda j: j.status == "running")
        killed = 0
        deadline = time.monotonic() + 3.0
        with admin.connect() as conn:  # keep cutting every connection while the job runs
            while time.monotonic() < deadline:
                killed += int(
                    conn.execute(
                        text(
                            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = :db AND pid <> pg_backend_pid()"
                        ),
                        {"db": database},
                    ).scalar_one()
                )
                time.sleep(0.1)
        assert killed > 0
        done = cluster.wait_for(first.id, lambda j: j.is_final)
        assert done.status == "succeeded", done.error
        # The same worker process carries on with the next job.
        second = cluster.queue.enqueue(discovery_spec(str(cluster.checkpoint), seed=5))
        after = cluster.wait_for(second.id, lambda j: j.is_final)
        assert after.status == "succeeded" and after.lease_owner == "wd"
        assert cluster.processes[0].exitcode is None
        assert cluster.circuits() == 2
    finally:
        admin.dispose()


@pytest.mark.postgres
@pytest.mark.slow  # a fresh interpreter imports torch and TransformerLens: 10-30 s
def test_runtime_cli_worker_stops_cleanly_on_sigterm(postgres_url: str, tmp_path: Path) -> None:
    cluster = Cluster(postgres_url, tmp_path)
    command = shutil.which("circuitreg", path=str(Path(sys.executable).parent))
    assert command is not None, "the circuitreg script is not installed next to python"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIRCUITREG_")}
    proc = subprocess.Popen(
        [command, "worker", "--id", "cli-worker", "--device", "cpu"],
        env={**env, **cluster.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        job = cluster.queue.enqueue(discovery_spec(str(cluster.checkpoint), seed=6))
        cluster.wait_for(job.id, lambda j: j.status == "running", timeout=120)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, output
        assert "worker stopped after" in output
        final = cluster.queue.get(job.id)
        assert final is not None
        last = cluster.queue.events(job.id)[-1].event
        # Released at its next progress report, or finished if it was past its last one.
        assert (final.status, last) in {("queued", "released"), ("succeeded", "succeeded")}
        if final.status == "queued":
            assert final.attempts == 0 and final.lease_owner is None
    finally:
        if proc.poll() is None:
            proc.kill()
        cluster.close()
