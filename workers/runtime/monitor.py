"""One running job's link to the queue: progress in, lease renewal out, interruption back.

The job runs on the worker's main thread; a daemon thread renews the lease every few seconds
with the latest progress. When the queue answers that the job was cancelled or its lease
lost, or the worker was asked to stop, the next progress report raises ``JobInterrupted``
inside the job, which unwinds it (store writes are transactions, so nothing half-written).
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Literal

from circuitreg.services.queue import JobQueue, JobRecord

log = logging.getLogger(__name__)

InterruptReason = Literal["cancelled", "lease lost", "stopping"]

#: The lease is renewed this often at most, so a cancellation is seen within seconds.
MAX_HEARTBEAT_SECONDS = 2.0


class JobInterrupted(BaseException):
    """Raised inside a job to stop it. A BaseException so method code's
    ``except Exception`` cannot swallow it."""

    def __init__(self, reason: InterruptReason) -> None:
        super().__init__(reason)
        self.reason: InterruptReason = reason


class JobMonitor:
    """Context manager around one job run: heartbeat thread plus the progress callback."""

    def __init__(
        self,
        queue: JobQueue,
        job: JobRecord,
        worker_id: str,
        lease_seconds: float,
        stop_requested: threading.Event,
    ) -> None:
        self.queue = queue
        self.job = job
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.interval = min(lease_seconds / 3.0, MAX_HEARTBEAT_SECONDS)
        self.stop_requested = stop_requested
        self.lost: InterruptReason | None = None
        self._progress = 0.0
        self._message: str | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._beat_forever, name=f"heartbeat-{job.id}", daemon=True
        )

    def __enter__(self) -> JobMonitor:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join(timeout=self.interval + 5.0)

    def report(self, fraction: float, message: str) -> None:
        """The ``ProgressFn`` handed to executors; raises ``JobInterrupted`` when told to."""
        with self._lock:
            self._progress = min(1.0, max(0.0, float(fraction)))
            self._message = message
        self.check()

    def check(self) -> None:
        """Raise ``JobInterrupted`` if the job was cancelled, lost, or the worker stops."""
        if self.lost is not None:
            raise JobInterrupted(self.lost)
        if self.stop_requested.is_set():
            raise JobInterrupted("stopping")

    def _beat_forever(self) -> None:
        while not self._done.wait(self.interval):
            with self._lock:
                progress, message = self._progress, self._message
            try:
                still_ours = self.queue.heartbeat(
                    self.job.id,
                    self.worker_id,
                    progress,
                    message,
                    lease_seconds=self.lease_seconds,
                )
            except Exception:  # the queue already retried; the next beat tries again
                log.exception("heartbeat for job %s failed; retrying", self.job.id)
                continue
            if not still_ours:
                try:
                    current = self.queue.get(self.job.id)
                except Exception:
                    current = None
                cancelled = current is not None and current.status == "cancelled"
                self.lost = "cancelled" if cancelled else "lease lost"
                log.warning("job %s: %s; stopping it", self.job.id, self.lost)
                return
