"""Fault tests with real worker processes against the real database.

Workers are separate processes started from the worker forkserver (``pool``), exactly as
``circuitreg worker --processes N`` starts them; one test runs the ``circuitreg worker``
command itself. Each test: a real (tiny) discovery job on a real toy checkpoint, a 2 s lease,
once with the embedded circuit store and once with the real Neo4j (a Neo4j server killed
mid-write is test_runtime_faults_neo4j.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from .runtime_support import Cluster, discovery_spec


@pytest.fixture
def cluster(postgres_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Workers on the PostgreSQL queue; the circuit store is the embedded one in the same
    database unless the test is parametrised with ``graph="neo4j"`` (the real server)."""
    graph = getattr(request, "param", "embedded")
    neo4j = request.getfixturevalue("empty_neo4j") if graph == "neo4j" else None
    made = Cluster(postgres_url, tmp_path, neo4j_uri=neo4j)
    try:
        yield made
    finally:
        made.close()


@pytest.mark.postgres
@pytest.mark.parametrize("cluster", ["embedded", "neo4j"], indirect=True)
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
@pytest.mark.parametrize("cluster", ["embedded", "neo4j"], indirect=True)
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
@pytest.mark.parametrize("graph", ["embedded", "neo4j"])
def test_runtime_cli_worker_stops_cleanly_on_sigterm(
    graph: str, postgres_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    neo4j = request.getfixturevalue("empty_neo4j") if graph == "neo4j" else None
    cluster = Cluster(postgres_url, tmp_path, neo4j_uri=neo4j)
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
        # The circuit is stored after the last progress report: only a finished job wrote it.
        assert cluster.circuits() == (1 if final.status == "succeeded" else 0)
    finally:
        if proc.poll() is None:
            proc.kill()
        cluster.close()
