"""The durable job queue on the relational database: enqueue, claim, lease, retry, log.

Why our own and not a library: pgqueuer and procrastinate both do leases and
``SKIP LOCKED`` claims well, but both are PostgreSQL-only (asyncpg / psycopg async), and the
registry's embedded default is SQLite, where the same queue has to work with no server. So
the queue is a few SQLAlchemy Core statements that run on both:

* PostgreSQL: a worker claims with ``SELECT … FOR UPDATE SKIP LOCKED`` in a short
  transaction, so many workers never block on, or double-claim, the same row.
* SQLite: every write is a short ``BEGIN IMMEDIATE`` transaction (one writer at a time; the
  WAL lets readers go on), which makes the same select-then-update claim atomic.

A claim is a lease (``lease_owner``, ``lease_expires_at``) renewed by ``heartbeat``; a job
whose worker died becomes claimable again when its lease expires, and counts an attempt.
``fail`` re-queues with exponential backoff (``run_after``) until ``max_attempts``, then the
job ends ``failed`` with its error kept; a failing job never blocks the others. Dedupe is a
partial unique index on the spec's SHA-256 plus ``INSERT … ON CONFLICT DO NOTHING``, so
concurrent submissions of one job from several processes give one job. Transient database
errors (a dropped connection, a locked SQLite file) are retried with ``tenacity``.
Lease times use the caller's UTC clock: workers on several machines need synchronised clocks.
"""

from __future__ import annotations

import builtins
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, RowMapping, Table, and_, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from circuitreg.services.db.base import make_engine, utcnow
from circuitreg.services.db.retry import retry_transient
from circuitreg.settings import Settings

from .models import (
    DEDUPE_STATUSES,
    FINAL_STATUSES,
    JobEvent,
    JobKind,
    JobNotFoundError,
    JobPage,
    JobRecord,
    JobSpec,
    JobStatus,
)
from .tables import DEDUPE_PREDICATE, JobEventRow, JobRow

__all__ = [
    "JobEvent",
    "JobKind",
    "JobNotFoundError",
    "JobPage",
    "JobQueue",
    "JobRecord",
    "JobSpec",
    "JobStatus",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

JOBS = cast(Table, JobRow.__table__)
EVENTS = cast(Table, JobEventRow.__table__)
MAX_ERROR_CHARS = 20_000
MAX_PAGE = 1000


def _aware(value: datetime | None) -> datetime | None:
    """Every time in UTC: SQLite hands back naive datetimes, PostgreSQL its session zone."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _record(row: RowMapping) -> JobRecord:
    return JobRecord(
        id=row["id"],
        kind=row["kind"],
        spec=JobSpec.model_validate(row["spec"]),
        status=row["status"],
        priority=row["priority"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        progress=min(1.0, max(0.0, float(row["progress"]))),
        message=row["message"],
        error=row["error"],
        result=row["result"],
        dedupe_key=row["dedupe_key"],
        created_at=_aware(row["created_at"]),
        updated_at=_aware(row["updated_at"]),
        started_at=_aware(row["started_at"]),
        finished_at=_aware(row["finished_at"]),
        run_after=_aware(row["run_after"]),
        lease_owner=row["lease_owner"],
        lease_expires_at=_aware(row["lease_expires_at"]),
    )


class JobQueue:
    """The job queue on one database; safe to share across threads and processes.

    ``retry_base_seconds`` is the first retry delay after a failure (doubled per attempt, at
    most ``retry_max_seconds``); ``db_retry_seconds`` bounds how long one call keeps retrying
    transient database errors before it raises.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        default_max_attempts: int = 3,
        lease_seconds: float = 30.0,
        retry_base_seconds: float = 2.0,
        retry_max_seconds: float = 300.0,
        db_retry_seconds: float = 30.0,
    ) -> None:
        backend = engine.dialect.name
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"the job queue supports sqlite and postgresql, not {backend!r}")
        if default_max_attempts < 1:
            raise ValueError("default_max_attempts must be at least 1")
        if lease_seconds <= 0 or retry_base_seconds < 0 or retry_max_seconds < 0:
            raise ValueError("lease and retry durations must be positive")
        self.engine = engine
        self._sqlite = backend == "sqlite"
        self.default_max_attempts = default_max_attempts
        self.lease_seconds = lease_seconds
        self.retry_base_seconds = retry_base_seconds
        self.retry_max_seconds = retry_max_seconds
        self.db_retry_seconds = db_retry_seconds

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine | None = None) -> JobQueue:
        """The queue on the configured database, with the configured lease and retries."""
        return cls(
            engine or make_engine(settings.resolved_database_url),
            default_max_attempts=settings.job_max_attempts,
            lease_seconds=settings.worker_lease_seconds,
            retry_base_seconds=settings.job_retry_base_seconds,
        )

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A short write transaction: ``BEGIN IMMEDIATE`` on SQLite, plain on PostgreSQL."""
        if not self._sqlite:
            with self.engine.begin() as conn:
                yield conn
            return
        with self.engine.connect() as raw:
            # AUTOCOMMIT stops pysqlite from issuing its own deferred BEGIN, so ours is the
            # only one; IMMEDIATE takes the write lock up front (no read-to-write upgrade
            # deadlock between two claimers).
            conn = raw.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                # A failed connection may have no transaction left: keep the first error.
                with suppress(Exception):
                    conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")

    def _retrying(self, operation: Callable[[], T]) -> T:
        """Run ``operation`` again after transient database errors, for a bounded time."""
        return retry_transient(operation, self.db_retry_seconds)

    @staticmethod
    def _log(
        conn: Connection,
        job_id: str,
        event: str,
        *,
        worker_id: str | None = None,
        message: str | None = None,
        data: dict[str, Any] | None = None,
        at: datetime | None = None,
    ) -> None:
        conn.execute(
            EVENTS.insert().values(
                job_id=job_id,
                at=at or utcnow(),
                event=event,
                worker_id=worker_id,
                message=message,
                data=data,
            )
        )

    @staticmethod
    def _row(conn: Connection, job_id: str, *, lock: bool = False) -> RowMapping | None:
        query = select(JOBS).where(JOBS.c.id == job_id)
        if lock:
            query = query.with_for_update()
        return conn.execute(query).mappings().first()

    @staticmethod
    def _update(conn: Connection, job_id: str, **values: Any) -> RowMapping:
        row = (
            conn.execute(update(JOBS).where(JOBS.c.id == job_id).values(**values).returning(JOBS))
            .mappings()
            .first()
        )
        assert row is not None, "the job row vanished inside its own transaction"
        return row

    # ------------------------------------------------------------------ submit and read

    def enqueue(self, spec: JobSpec, *, max_attempts: int | None = None) -> JobRecord:
        """Submit a job, or return the queued/running/succeeded job with the same key."""
        attempts = self.default_max_attempts if max_attempts is None else max_attempts
        if attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {attempts}")
        return self._retrying(lambda: self._enqueue_once(spec, attempts))

    def _enqueue_once(self, spec: JobSpec, max_attempts: int) -> JobRecord:
        key = spec.dedupe_key()
        insert = pg_insert if not self._sqlite else sqlite_insert
        # A matching job can finish as failed between our insert and our select (then the
        # index lets a new one in): a few rounds settle that race.
        for _ in range(5):
            with self._transaction() as conn:
                now = utcnow()
                job_id = "j_" + uuid.uuid4().hex
                stmt = (
                    insert(JOBS)
                    .values(
                        id=job_id,
                        kind=spec.kind,
                        spec=spec.model_dump(mode="json"),
                        dedupe_key=key,
                        status="queued",
                        priority=spec.priority,
                        attempts=0,
                        max_attempts=max_attempts,
                        progress=0.0,
                        created_at=now,
                        updated_at=now,
                        run_after=now,
                    )
                    .on_conflict_do_nothing(
                        index_elements=["dedupe_key"], index_where=text(DEDUPE_PREDICATE)
                    )
                )
                # RETURNING, not rowcount: psycopg does not report DO NOTHING's count reliably.
                if conn.execute(stmt.returning(JOBS.c.seq)).first() is not None:
                    self._log(conn, job_id, "enqueued", data={"dedupe_key": key}, at=now)
                    row = self._row(conn, job_id)
                    assert row is not None
                    return _record(row)
                existing = (
                    conn.execute(
                        select(JOBS).where(
                            JOBS.c.dedupe_key == key, JOBS.c.status.in_(DEDUPE_STATUSES)
                        )
                    )
                    .mappings()
                    .first()
                )
                if existing is not None:
                    self._log(conn, existing["id"], "duplicate", message="submitted again")
                    return _record(existing)
        raise RuntimeError(f"could not enqueue job with dedupe key {key}: it kept changing")

    def get(self, job_id: str) -> JobRecord | None:
        """The job, or None if no job has this id."""

        def read() -> JobRecord | None:
            with self.engine.connect() as conn:
                row = self._row(conn, job_id)
            return None if row is None else _record(row)

        return self._retrying(read)

    def list(
        self,
        status: JobStatus | None = None,
        first: int = 50,
        after: str | None = None,
        *,
        kind: JobKind | None = None,
    ) -> JobPage:
        """Jobs newest first; ``after`` is a job id (the previous page's ``end_cursor``)."""
        if not 1 <= first <= MAX_PAGE:
            raise ValueError(f"first must be between 1 and {MAX_PAGE}, got {first}")

        def read() -> JobPage:
            with self.engine.connect() as conn:
                query = select(JOBS).order_by(JOBS.c.seq.desc()).limit(first + 1)
                if status is not None:
                    query = query.where(JOBS.c.status == status)
                if kind is not None:
                    query = query.where(JOBS.c.kind == kind)
                if after is not None:
                    cursor = conn.execute(select(JOBS.c.seq).where(JOBS.c.id == after)).scalar()
                    if cursor is None:
                        raise ValueError(f"unknown cursor {after!r}: no job has this id")
                    query = query.where(JOBS.c.seq < cursor)
                rows = conn.execute(query).mappings().all()
            items = tuple(_record(r) for r in rows[:first])
            return JobPage(
                items=items,
                has_next=len(rows) > first,
                end_cursor=items[-1].id if items else None,
            )

        return self._retrying(read)

    def events(self, job_id: str) -> builtins.list[JobEvent]:
        """The job's event log, oldest first."""

        def read() -> builtins.list[JobEvent]:
            with self.engine.connect() as conn:
                if self._row(conn, job_id) is None:
                    raise JobNotFoundError(job_id)
                rows = conn.execute(
                    select(EVENTS).where(EVENTS.c.job_id == job_id).order_by(EVENTS.c.id)
                ).mappings()
                return [
                    JobEvent(
                        id=r["id"],
                        job_id=r["job_id"],
                        at=_aware(r["at"]),
                        event=r["event"],
                        worker_id=r["worker_id"],
                        message=r["message"],
                        data=r["data"],
                    )
                    for r in rows
                ]

        return self._retrying(read)

    def stats(self) -> dict[str, int]:
        """Number of jobs in each status (every status present, zero if none)."""

        def read() -> dict[str, int]:
            with self.engine.connect() as conn:
                rows = conn.execute(select(JOBS.c.status, func.count()).group_by(JOBS.c.status))
                counts = {str(s): int(n) for s, n in rows}
            statuses = ("queued", "running", "succeeded", "failed", "cancelled")
            return {s: counts.get(s, 0) for s in statuses}

        return self._retrying(read)

    # ------------------------------------------------------------------ the worker side

    def claim(self, worker_id: str, lease_seconds: float | None = None) -> JobRecord | None:
        """Take the most urgent claimable job for ``worker_id``, or None if there is none.

        Claimable: queued and past its ``run_after``, or running with an expired lease (its
        worker died). A job whose lease expired on its last attempt ends failed instead.
        """
        lease = self.lease_seconds if lease_seconds is None else lease_seconds
        if lease <= 0:
            raise ValueError("lease_seconds must be positive")
        return self._retrying(lambda: self._claim_once(worker_id, lease))

    def _claim_once(self, worker_id: str, lease_seconds: float) -> JobRecord | None:
        with self._transaction() as conn:
            while True:
                now = utcnow()
                candidate = self._next_claimable(conn, now)
                if candidate is None:
                    return None
                if candidate["status"] == "running" and not self._reclaimable(conn, candidate, now):
                    continue  # its lease expired on its last attempt: failed, try the next
                row = self._update(
                    conn,
                    candidate["id"],
                    status="running",
                    attempts=candidate["attempts"] + 1,
                    lease_owner=worker_id,
                    lease_expires_at=now + timedelta(seconds=lease_seconds),
                    started_at=candidate["started_at"] or now,
                    updated_at=now,
                )
                self._log(
                    conn,
                    candidate["id"],
                    "claimed",
                    worker_id=worker_id,
                    data={"attempt": row["attempts"]},
                    at=now,
                )
                return _record(row)

    @staticmethod
    def _next_claimable(conn: Connection, now: datetime) -> RowMapping | None:
        """The best queued job that is due, or running one whose lease expired; locked, and
        skipped by other claimers (``SKIP LOCKED``) so concurrent workers never wait."""
        return (
            conn.execute(
                select(JOBS)
                .where(
                    or_(
                        and_(JOBS.c.status == "queued", JOBS.c.run_after <= now),
                        and_(JOBS.c.status == "running", JOBS.c.lease_expires_at < now),
                    )
                )
                .order_by(JOBS.c.priority.desc(), JOBS.c.seq)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            .mappings()
            .first()
        )

    def _reclaimable(self, conn: Connection, candidate: RowMapping, now: datetime) -> bool:
        """Record a lost lease: the job fails if that was its last attempt (False), else the
        expiry is logged and the job may be claimed again (True)."""
        job_id = candidate["id"]
        lost = f"lease of worker {candidate['lease_owner']} expired"
        if candidate["attempts"] >= candidate["max_attempts"]:
            error = f"{lost} on attempt {candidate['attempts']} (the last)"
            self._fail_for_good(conn, job_id, error, now)
            return False
        self._log(
            conn,
            job_id,
            "lease_expired",
            worker_id=candidate["lease_owner"],
            message=lost,
            at=now,
        )
        return True

    def heartbeat(
        self,
        job_id: str,
        worker_id: str,
        progress: float | None = None,
        message: str | None = None,
        *,
        lease_seconds: float | None = None,
    ) -> bool:
        """Renew the lease and record progress; False if the job was cancelled or lost.

        A changed ``message`` is also written to the event log, so the log shows the stages
        of a run without one row per heartbeat.
        """
        lease = self.lease_seconds if lease_seconds is None else lease_seconds
        if progress is not None and not 0.0 <= progress <= 1.0:
            raise ValueError(f"progress must be within [0, 1], got {progress}")

        def beat() -> bool:
            with self._transaction() as conn:
                row = self._row(conn, job_id, lock=True)
                if row is None:
                    raise JobNotFoundError(job_id)
                if row["status"] != "running" or row["lease_owner"] != worker_id:
                    return False
                now = utcnow()
                values: dict[str, Any] = {
                    "updated_at": now,
                    "lease_expires_at": now + timedelta(seconds=lease),
                }
                if progress is not None:
                    values["progress"] = progress
                if message is not None:
                    values["message"] = message
                self._update(conn, job_id, **values)
                if message is not None and message != row["message"]:
                    data = None if progress is None else {"progress": progress}
                    self._log(
                        conn,
                        job_id,
                        "progress",
                        worker_id=worker_id,
                        message=message,
                        data=data,
                        at=now,
                    )
                return True

        return self._retrying(beat)

    def complete(self, job_id: str, worker_id: str, result: dict[str, Any]) -> bool:
        """Mark the job succeeded with ``result``; False if it was cancelled or lost.

        Calling it again for the same worker after success returns True (a retried call
        after a dropped connection must not look like a lost lease).
        """

        def finish() -> bool:
            with self._transaction() as conn:
                row = self._row(conn, job_id, lock=True)
                if row is None:
                    raise JobNotFoundError(job_id)
                if row["lease_owner"] != worker_id:
                    return False
                if row["status"] == "succeeded":
                    return True
                if row["status"] != "running":
                    return False
                now = utcnow()
                self._update(
                    conn,
                    job_id,
                    status="succeeded",
                    result=result,
                    progress=1.0,
                    error=None,
                    finished_at=now,
                    updated_at=now,
                    lease_expires_at=None,
                )
                self._log(conn, job_id, "succeeded", worker_id=worker_id, data=result, at=now)
                return True

        return self._retrying(finish)

    def fail(
        self, job_id: str, worker_id: str, error: str, *, retry: bool = True
    ) -> JobRecord | None:
        """Record a failed attempt: re-queue with backoff, or fail for good at the limit.

        Returns the job as it now is, or None when the worker no longer holds it (it was
        cancelled, or its lease was lost to another worker). ``retry=False`` fails at once.
        """
        error = error[:MAX_ERROR_CHARS] or "failed without a message"

        def record_failure() -> JobRecord | None:
            with self._transaction() as conn:
                row = self._row(conn, job_id, lock=True)
                if row is None:
                    raise JobNotFoundError(job_id)
                if row["status"] != "running" or row["lease_owner"] != worker_id:
                    return None
                now = utcnow()
                if retry and row["attempts"] < row["max_attempts"]:
                    updated = self._requeue(conn, row, worker_id, error, now)
                else:
                    updated = self._fail_for_good(
                        conn, job_id, error, now, worker_id=worker_id, attempt=row["attempts"]
                    )
                return _record(updated)

        return self._retrying(record_failure)

    def _fail_for_good(
        self,
        conn: Connection,
        job_id: str,
        error: str,
        now: datetime,
        *,
        worker_id: str | None = None,
        attempt: int | None = None,
    ) -> RowMapping:
        """Mark the job failed with ``error`` (no more attempts) and log it."""
        updated = self._update(
            conn,
            job_id,
            status="failed",
            error=error,
            finished_at=now,
            updated_at=now,
            lease_expires_at=None,
        )
        self._log(
            conn,
            job_id,
            "failed",
            worker_id=worker_id,
            message=error,
            data=None if attempt is None else {"attempt": attempt},
            at=now,
        )
        return updated

    def _requeue(
        self, conn: Connection, row: RowMapping, worker_id: str, error: str, now: datetime
    ) -> RowMapping:
        """Queue a failed attempt again after an exponential backoff (capped)."""
        attempt = row["attempts"]
        delay = min(self.retry_base_seconds * 2 ** max(0, attempt - 1), self.retry_max_seconds)
        updated = self._update(
            conn,
            row["id"],
            status="queued",
            error=error,
            run_after=now + timedelta(seconds=delay),
            updated_at=now,
            lease_expires_at=None,
            message=f"attempt {attempt} failed; retrying in {delay:g} s",
        )
        self._log(
            conn,
            row["id"],
            "retry",
            worker_id=worker_id,
            message=error,
            data={"attempt": attempt, "delay_seconds": delay},
            at=now,
        )
        return updated

    def release(self, job_id: str, worker_id: str) -> bool:
        """Give a running job back to the queue (on SIGTERM); the attempt is not counted."""

        def give_back() -> bool:
            with self._transaction() as conn:
                row = self._row(conn, job_id, lock=True)
                if row is None:
                    raise JobNotFoundError(job_id)
                if row["status"] != "running" or row["lease_owner"] != worker_id:
                    return False
                now = utcnow()
                self._update(
                    conn,
                    job_id,
                    status="queued",
                    attempts=max(0, row["attempts"] - 1),
                    run_after=now,
                    updated_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                    progress=0.0,
                    message="released by its worker",
                )
                self._log(conn, job_id, "released", worker_id=worker_id, at=now)
                return True

        return self._retrying(give_back)

    def cancel(self, job_id: str) -> JobRecord:
        """Cancel a queued or running job (its worker stops at its next heartbeat).

        A job that already finished is returned unchanged; check ``status``.
        """

        def stop() -> JobRecord:
            with self._transaction() as conn:
                row = self._row(conn, job_id, lock=True)
                if row is None:
                    raise JobNotFoundError(job_id)
                if row["status"] in FINAL_STATUSES:
                    return _record(row)
                now = utcnow()
                updated = self._update(
                    conn,
                    job_id,
                    status="cancelled",
                    finished_at=now,
                    updated_at=now,
                    lease_expires_at=None,
                )
                self._log(conn, job_id, "cancelled", worker_id=row["lease_owner"], at=now)
                return _record(updated)

        return self._retrying(stop)
