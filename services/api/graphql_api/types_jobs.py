"""The Job type: a queued discovery or validation run with its status and progress."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.scalars import JSON

from .context import Info
from .types_circuit import Circuit


@strawberry.enum(description="Where a job is in its life.")
class JobState(Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@strawberry.type
class JobEvent:
    """One entry of a job's event log."""

    at: datetime
    event: str
    worker_id: str | None
    message: str | None
    data: JSON | None


@strawberry.type
class Job:
    """A discovery or validation job; ``progress`` is the fraction done (0..1)."""

    id: strawberry.ID
    kind: str
    status: JobState
    priority: int
    attempts: int
    max_attempts: int
    progress: float
    message: str | None
    error: str | None
    result: JSON | None
    model: str
    task: str
    method: str | None
    params: JSON
    ablation: str
    metric: str
    circuit_id: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, record: Any) -> Job:
        """From a ``circuitreg.services.queue.models.JobRecord``."""
        spec = record.spec
        return cls(
            id=strawberry.ID(record.id),
            kind=record.kind,
            status=JobState(record.status),
            priority=record.priority,
            attempts=record.attempts,
            max_attempts=record.max_attempts,
            progress=record.progress,
            message=record.message,
            error=record.error,
            result=JSON(record.result),
            model=spec.model,
            task=spec.task,
            method=spec.method,
            params=JSON(spec.params),
            ablation=spec.ablation,
            metric=spec.metric,
            circuit_id=spec.circuit_id,
            created_at=record.created_at,
            updated_at=record.updated_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
        )

    @strawberry.field(description="The circuit the job produced or validated, once stored.")
    async def circuit(self, info: Info) -> Circuit | None:
        result: dict[str, Any] = self.result if isinstance(self.result, dict) else {}
        circuit_id = result.get("circuit_id") or self.circuit_id
        if not circuit_id:
            return None
        summary = await info.context.loaders.summary.load(str(circuit_id))
        return None if summary is None else Circuit(summary=summary)

    @strawberry.field(description="The job's event log, oldest first (at most 1000 entries).")
    async def events(self, info: Info) -> list[JobEvent]:
        services = info.context.services
        found = await services.call(services.queue.events, str(self.id))
        return [
            JobEvent(
                at=e.at, event=e.event, worker_id=e.worker_id, message=e.message, data=JSON(e.data)
            )
            for e in list(found)[:1000]
        ]
