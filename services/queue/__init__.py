"""The durable job queue (jobs + event log tables) shared by the API and the workers."""

from .api import JobQueue
from .models import (
    JobEvent,
    JobKind,
    JobNotFoundError,
    JobPage,
    JobRecord,
    JobSpec,
    JobStatus,
)

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
