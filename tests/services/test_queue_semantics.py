"""Queue semantics on SQLite and the real PostgreSQL: dedupe, claims, leases, retries, log."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import update

from circuitreg.migrations.relational import upgrade
from circuitreg.services.db.base import make_engine, utcnow
from circuitreg.services.queue import JobNotFoundError, JobQueue, JobSpec
from circuitreg.services.queue.tables import JobRow


@pytest.fixture
def queue(database_url: str) -> Iterator[JobQueue]:
    upgrade(database_url)
    engine = make_engine(database_url)
    yield JobQueue(engine, retry_base_seconds=0.05, retry_max_seconds=0.2, default_max_attempts=3)
    engine.dispose()


def spec(**overrides: object) -> JobSpec:
    base: dict[str, object] = {
        "kind": "discovery",
        "model": "toy:attn2",
        "task": "induction:n=8",
        "method": "eap",
        "params": {"top_k": 10},
    }
    base.update(overrides)
    return JobSpec.model_validate(base)


def expire_lease(queue: JobQueue, job_id: str) -> None:
    """Move the lease into the past, as if its worker had died a while ago."""
    with queue.engine.begin() as conn:
        conn.execute(
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def test_queue_dedupe_same_spec_gives_same_job(queue: JobQueue) -> None:
    first = queue.enqueue(spec())
    again = queue.enqueue(spec(params={"top_k": 10}, priority=5))
    other = queue.enqueue(spec(params={"top_k": 11}))
    assert again.id == first.id
    assert other.id != first.id
    # The revision, when known, identifies the model instead of its spelling.
    a = queue.enqueue(spec(model="path/a", model_revision="sha-1"))
    b = queue.enqueue(spec(model="path/b", model_revision="sha-1"))
    assert a.id == b.id
    assert [e.event for e in queue.events(first.id)] == ["enqueued", "duplicate"]


def test_queue_failed_job_can_be_submitted_again(queue: JobQueue) -> None:
    job = queue.enqueue(spec(), max_attempts=1)
    assert queue.claim("w1", 5) is not None
    failed = queue.fail(job.id, "w1", "boom")
    assert failed is not None and failed.status == "failed" and failed.error == "boom"
    fresh = queue.enqueue(spec())
    assert fresh.id != job.id and fresh.status == "queued"


def test_queue_spec_validation_names_the_problem() -> None:
    with pytest.raises(ValueError, match="needs a method"):
        JobSpec(kind="discovery", model="m", task="t")
    with pytest.raises(ValueError, match="circuit_id"):
        JobSpec(kind="validation", model="m", task="t")
    with pytest.raises(ValueError, match="plain JSON"):
        JobSpec(kind="discovery", model="m", task="t", method="eap", params={"x": float("nan")})


def test_queue_claim_order_and_exclusive_lease(queue: JobQueue) -> None:
    low = queue.enqueue(spec(params={"n": 1}))
    high = queue.enqueue(spec(params={"n": 2}, priority=10))
    first = queue.claim("w1", 30)
    second = queue.claim("w2", 30)
    assert first is not None and first.id == high.id and first.lease_owner == "w1"
    assert second is not None and second.id == low.id
    assert queue.claim("w3", 30) is None
    assert first.attempts == 1 and first.status == "running"
    assert first.lease_expires_at is not None and first.lease_expires_at > utcnow()


def test_queue_heartbeat_progress_and_complete(queue: JobQueue) -> None:
    job = queue.enqueue(spec())
    queue.claim("w1", 30)
    assert queue.heartbeat(job.id, "w1", 0.25, "scoring edges")
    assert queue.heartbeat(job.id, "w1", 0.5, "scoring edges")
    assert not queue.heartbeat(job.id, "intruder", 0.9, "nope")
    with pytest.raises(ValueError, match="progress"):
        queue.heartbeat(job.id, "w1", 1.5)
    running = queue.get(job.id)
    assert running is not None and running.progress == 0.5 and running.message == "scoring edges"
    assert not queue.complete(job.id, "intruder", {"circuit_id": "c_x"})
    assert queue.complete(job.id, "w1", {"circuit_id": "c_1"})
    assert queue.complete(job.id, "w1", {"circuit_id": "c_1"})  # a retried call is fine
    done = queue.get(job.id)
    assert done is not None and done.status == "succeeded" and done.result == {"circuit_id": "c_1"}
    assert done.finished_at is not None and done.progress == 1.0
    events = [e.event for e in queue.events(job.id)]
    assert events == ["enqueued", "claimed", "progress", "succeeded"]


def make_due(queue: JobQueue, job_id: str) -> None:
    """Move a retry's ``run_after`` into the past, as if its backoff had elapsed."""
    with queue.engine.begin() as conn:
        conn.execute(
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(run_after=utcnow() - timedelta(seconds=1))
        )


def test_queue_retry_backoff_then_final_failure_keeps_error(queue: JobQueue) -> None:
    slow = JobQueue(queue.engine, retry_base_seconds=30, retry_max_seconds=45)
    job = slow.enqueue(spec())
    for attempt, delay in ((1, 30), (2, 45)):  # 30 s, then 60 s capped at 45 s
        claimed = slow.claim("w1", 30)
        assert claimed is not None and claimed.attempts == attempt
        retried = slow.fail(job.id, "w1", f"error {attempt}")
        assert retried is not None and retried.status == "queued"
        assert retried.run_after - retried.updated_at == timedelta(seconds=delay)
        assert slow.claim("w1", 30) is None  # backing off: not claimable yet
        make_due(slow, job.id)
    assert slow.claim("w1", 30) is not None
    final = slow.fail(job.id, "w1", "error 3")
    assert final is not None and final.status == "failed" and final.error == "error 3"
    assert final.attempts == 3 and final.finished_at is not None
    assert [e.event for e in slow.events(job.id)].count("retry") == 2


def test_queue_failing_job_does_not_block_others(queue: JobQueue) -> None:
    slow = JobQueue(queue.engine, retry_base_seconds=30)
    bad = slow.enqueue(spec(params={"n": 1}, priority=5), max_attempts=2)
    good = slow.enqueue(spec(params={"n": 2}))
    claimed = slow.claim("w1", 30)
    assert claimed is not None and claimed.id == bad.id
    slow.fail(bad.id, "w1", "no such model")
    nxt = slow.claim("w1", 30)  # the bad job is backing off: the good one runs meanwhile
    assert nxt is not None and nxt.id == good.id


def test_queue_expired_lease_is_reclaimed_and_old_owner_loses(queue: JobQueue) -> None:
    job = queue.enqueue(spec())
    queue.claim("dead", 30)
    assert queue.claim("w2", 30) is None
    expire_lease(queue, job.id)
    taken = queue.claim("w2", 30)
    assert taken is not None and taken.id == job.id and taken.attempts == 2
    assert not queue.heartbeat(job.id, "dead")
    assert queue.fail(job.id, "dead", "late") is None
    assert not queue.complete(job.id, "dead", {})
    events = queue.events(job.id)
    assert [e.event for e in events] == ["enqueued", "claimed", "lease_expired", "claimed"]
    assert events[2].worker_id == "dead"


def test_queue_lease_expiring_on_last_attempt_fails_the_job(queue: JobQueue) -> None:
    job = queue.enqueue(spec(), max_attempts=1)
    other = queue.enqueue(spec(params={"other": True}))
    queue.claim("dead", 30)
    expire_lease(queue, job.id)
    taken = queue.claim("w2", 30)
    assert taken is not None and taken.id == other.id
    failed = queue.get(job.id)
    assert failed is not None and failed.status == "failed"
    assert failed.error is not None and "dead" in failed.error


def test_queue_cancel_and_release(queue: JobQueue) -> None:
    job = queue.enqueue(spec())
    queue.claim("w1", 30)
    assert queue.release(job.id, "w1")
    back = queue.get(job.id)
    assert back is not None and back.status == "queued" and back.attempts == 0
    queue.claim("w1", 30)
    cancelled = queue.cancel(job.id)
    assert cancelled.status == "cancelled"
    assert not queue.heartbeat(job.id, "w1", 0.5, "still going")
    assert not queue.complete(job.id, "w1", {"circuit_id": "c_1"})
    assert queue.cancel(job.id).status == "cancelled"
    with pytest.raises(JobNotFoundError, match="no job"):
        queue.cancel("j_missing")
    assert queue.get("j_missing") is None


def test_queue_list_pages_newest_first(queue: JobQueue) -> None:
    ids = [queue.enqueue(spec(params={"n": i})).id for i in range(5)]
    queue.claim("w1", 30)
    page = queue.list(first=2)
    assert [j.id for j in page.items] == ids[::-1][:2] and page.has_next
    page2 = queue.list(first=2, after=page.end_cursor)
    assert [j.id for j in page2.items] == ids[::-1][2:4]
    last = queue.list(first=2, after=page2.end_cursor)
    assert [j.id for j in last.items] == ids[:1] and not last.has_next
    assert [j.id for j in queue.list(status="running").items] == [ids[0]]
    assert queue.stats() == {
        "queued": 4,
        "running": 1,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 0,
    }
    with pytest.raises(ValueError, match="unknown cursor"):
        queue.list(after="j_nope")
    with pytest.raises(ValueError, match="first"):
        queue.list(first=0)
