"""Root subscription: a job's progress, pushed over graphql-transport-ws.

The queue is a database table written by workers in other processes, so the subscription
polls it (every ``POLL_SECONDS``) and sends an update whenever status, progress or message
changes, ending once the job is final.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import strawberry

from .context import Info
from .errors import InputError
from .permissions import READ
from .types_jobs import Job

POLL_SECONDS = 0.5
FINAL = ("succeeded", "failed", "cancelled")


@strawberry.type
class Subscription:
    @strawberry.subscription(
        permission_classes=READ, description="Updates of a job until it finishes."
    )
    async def job_progress(self, info: Info, id: strawberry.ID) -> AsyncGenerator[Job, None]:
        services = info.context.services
        last: tuple[object, ...] | None = None
        while True:
            record = await services.call(services.queue.get, str(id))
            if record is None:
                raise InputError("id", f"no job with id {str(id)!r}")
            state = (record.status, record.progress, record.message, record.attempts)
            if state != last:
                last = state
                yield Job.of(record)
            if record.status in FINAL:
                return
            await asyncio.sleep(POLL_SECONDS)
