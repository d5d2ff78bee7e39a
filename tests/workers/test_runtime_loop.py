"""The worker loop in-process with scripted runners: outcomes, cancellation, stop, lease loss.

The executors (real discovery on a real model) are exercised by the fault tests with real
processes; here the runner is a small function so each loop behaviour is seen in isolation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from circuitreg.migrations.relational import upgrade
from circuitreg.services.db.base import make_engine, utcnow
from circuitreg.services.queue import JobQueue, JobRecord, JobSpec
from circuitreg.services.queue.tables import JobRow
from circuitreg.workers.runtime import Worker, WorkerOptions

ProgressFn = Callable[[float, str], None]


@pytest.fixture
def queue(database_url: str) -> Iterator[JobQueue]:
    upgrade(database_url)
    engine = make_engine(database_url)
    yield JobQueue(engine, retry_base_seconds=0.05, lease_seconds=0.6)
    engine.dispose()


def submit(queue: JobQueue, n: int = 0, max_attempts: int | None = None) -> JobRecord:
    spec = JobSpec(kind="discovery", model="m", task="t", method="eap", params={"n": n})
    return queue.enqueue(spec, max_attempts=max_attempts)


def worker(queue: JobQueue, runner: Callable[[JobRecord, ProgressFn], dict[str, Any]]) -> Worker:
    options = WorkerOptions(worker_id="w1", lease_seconds=0.6, poll_seconds=0.05, once=True)
    return Worker(queue, runner, options)


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    """Poll ``condition`` (the machine may be busy: no fixed sleeps stand in for it)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def busy_until_interrupted(job: JobRecord, progress: ProgressFn) -> dict[str, Any]:
    """A job that reports progress every 20 ms and would take 30 s if left alone."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        progress(0.5, "working")
        time.sleep(0.02)
    return {"finished": True}


def test_runtime_loop_success_records_result_and_progress(queue: JobQueue) -> None:
    job = submit(queue)

    def runner(job: JobRecord, progress: ProgressFn) -> dict[str, Any]:
        progress(0.5, "halfway")
        wait_until(lambda: getattr(queue.get(job.id), "message", None) == "halfway")
        return {"circuit_id": "c_abc"}

    assert worker(queue, runner).run() == 1
    done = queue.get(job.id)
    assert done is not None and done.status == "succeeded"
    assert done.result == {"circuit_id": "c_abc"}
    assert "halfway" in [e.message for e in queue.events(job.id)]


def test_runtime_loop_failure_retries_then_fails_and_next_job_runs(queue: JobQueue) -> None:
    bad = submit(queue, n=1, max_attempts=2)
    good = submit(queue, n=2)
    calls: list[str] = []

    def runner(job: JobRecord, progress: ProgressFn) -> dict[str, Any]:
        calls.append(job.id)
        if job.id == bad.id:
            raise FileNotFoundError("no model named 'missing'")
        return {"ok": True}

    options = WorkerOptions(worker_id="w1", lease_seconds=5, poll_seconds=0.02)
    loop = Worker(queue, runner, options)
    thread = threading.Thread(target=loop.run)
    thread.start()
    wait_until(lambda: all(queue.stats()[s] == 0 for s in ("queued", "running")))
    loop.request_stop()
    thread.join(5)
    failed, succeeded = queue.get(bad.id), queue.get(good.id)
    assert failed is not None and failed.status == "failed" and failed.attempts == 2
    assert failed.error is not None
    assert failed.error.startswith("FileNotFoundError: no model named 'missing'")
    assert succeeded is not None and succeeded.status == "succeeded"
    assert calls.count(bad.id) == 2


def test_runtime_loop_cancellation_stops_the_job_within_seconds(queue: JobQueue) -> None:
    job = submit(queue)
    loop = worker(queue, busy_until_interrupted)
    outcome: list[str] = []

    def run() -> None:
        claimed = queue.claim("w1", 0.6)
        assert claimed is not None
        outcome.append(loop.run_job(claimed))

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    queue.cancel(job.id)
    thread.join(10)
    assert outcome == ["cancelled"]
    assert time.monotonic() - started < 5.0  # heartbeats every 0.2 s here; slack for load
    final = queue.get(job.id)
    assert final is not None and final.status == "cancelled" and final.result is None


def test_runtime_loop_stop_request_releases_the_job(queue: JobQueue) -> None:
    job = submit(queue)
    loop = worker(queue, busy_until_interrupted)
    thread = threading.Thread(target=loop.run)
    thread.start()
    wait_until(lambda: getattr(queue.get(job.id), "status", None) == "running")
    loop.request_stop()
    thread.join(10)
    assert not thread.is_alive()
    back = queue.get(job.id)
    assert back is not None and back.status == "queued" and back.attempts == 0
    assert queue.events(job.id)[-1].event == "released"


def test_runtime_loop_lost_lease_stops_without_writing(queue: JobQueue) -> None:
    job = submit(queue)
    loop = worker(queue, busy_until_interrupted)
    outcome: list[str] = []
    claimed = queue.claim("w1", 0.6)
    assert claimed is not None
    thread = threading.Thread(target=lambda: outcome.append(loop.run_job(claimed)))
    thread.start()
    time.sleep(0.2)
    with queue.engine.begin() as conn:  # another worker takes over after an expiry
        conn.execute(
            update(JobRow)
            .where(JobRow.id == job.id)
            .values(lease_owner="w2", lease_expires_at=utcnow() + timedelta(seconds=30))
        )
    thread.join(10)
    assert outcome == ["lease lost"]
    current = queue.get(job.id)
    assert current is not None and current.status == "running" and current.lease_owner == "w2"
