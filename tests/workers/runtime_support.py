"""Helpers shared by the runtime tests: a tiny real toy checkpoint, migrated databases, and a
cluster of real worker processes."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path

from circuitreg.migrations.relational import upgrade
from circuitreg.services.db.base import make_engine
from circuitreg.services.queue import JobQueue, JobRecord, JobSpec
from circuitreg.services.stores.factory import open_store
from circuitreg.services.stores.types import CircuitFilter
from circuitreg.settings import Settings
from circuitreg.workers.runtime.pool import start_worker_processes

LEASE_SECONDS = 2.0

TINY = {"n_layers": 2, "d_model": 32, "n_heads": 2, "d_vocab": 24, "seq_len": 6, "seed": 0}


def tiny_toy_checkpoint(directory: Path) -> Path:
    """An untrained 2-layer attention-only toy checkpoint (real weights, real loader)."""
    from circuitreg.workers.toy.checkpoint import (
        checkpoint_name,
        new_native_model,
        save_checkpoint,
        write_run_config,
    )
    from circuitreg.workers.toy.config import ToyConfig

    config = ToyConfig(**TINY)  # type: ignore[arg-type]
    directory.mkdir(parents=True, exist_ok=True)
    write_run_config(directory, config)
    path = directory / checkpoint_name(0)
    save_checkpoint(new_native_model(config), path, step=0, config_hash=config.config_hash())
    return path


def discovery_spec(model: str, **params: object) -> JobSpec:
    """A small but real discovery job: EAP on induction prompts, top 12 edges."""
    return JobSpec(
        kind="discovery",
        model=model,
        task="induction:seq_len=6,n=16",
        method="eap",
        params={"selection": {"mode": "top_k", "value": 12}, **params},
    )


def migrate(url: str) -> None:
    """Bring a database to head through the Alembic chain (as `circuitreg migrate` does)."""
    upgrade(url)


class Cluster:
    """A database, a toy checkpoint, the workers' settings, and the processes started."""

    def __init__(self, url: str, tmp_path: Path, *, neo4j_uri: str | None = None) -> None:
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
        if neo4j_uri is not None:  # circuits go to the real Neo4j, as in production
            self.env |= {"CIRCUITREG_GRAPH_BACKEND": "neo4j", "CIRCUITREG_NEO4J_URI": neo4j_uri}
            for key in ("CIRCUITREG_NEO4J_USER", "CIRCUITREG_NEO4J_PASSWORD"):
                if key in os.environ:
                    self.env[key] = os.environ[key]
        self.settings = Settings(
            database_url=url,
            graph_backend="neo4j" if neo4j_uri else "embedded",
            neo4j_uri=neo4j_uri,
            neo4j_user=os.environ.get("CIRCUITREG_NEO4J_USER", "neo4j"),
            neo4j_password=os.environ.get("CIRCUITREG_NEO4J_PASSWORD", ""),
        )
        store = open_store(self.settings)
        try:
            store.migrate()
        finally:
            store.close()
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
        """How many circuits the workers' store holds."""
        store = open_store(self.settings)
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
