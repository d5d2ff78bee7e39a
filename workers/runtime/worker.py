"""The worker loop: claim a job, run it under a heartbeat, record the outcome, repeat.

Several workers on one machine are several processes (each with its own id and model
cache); they coordinate only through the queue's leases. SIGTERM or SIGINT asks the worker
to stop: a job that reports progress again is released back to the queue (another worker
takes it at once), a job already past its last report finishes; a second signal stops at
once (the lease then expires and the job is re-run; circuit writes are idempotent).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from types import FrameType
from typing import Any, Literal

from circuitreg.services.queue import JobQueue, JobRecord

from .monitor import JobInterrupted, JobMonitor

log = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], None]
#: Runs one job and returns its result (e.g. ``{"circuit_id": ...}``).
JobRunner = Callable[[JobRecord, ProgressFn], dict[str, Any]]
Outcome = Literal["succeeded", "failed", "retrying", "released", "cancelled", "lease lost"]

MAX_TRACEBACK_CHARS = 4000


def default_worker_id() -> str:
    """Host and process id: unique among the workers of one machine."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class WorkerOptions:
    """How one worker process behaves."""

    worker_id: str
    lease_seconds: float = 30.0
    poll_seconds: float = 1.0
    once: bool = False

    def __post_init__(self) -> None:
        if not self.worker_id:
            raise ValueError("worker_id must not be empty")
        if self.lease_seconds <= 0 or self.poll_seconds <= 0:
            raise ValueError("lease_seconds and poll_seconds must be positive")


def describe_failure(exc: BaseException) -> str:
    """The error kept on the job: one headline line, then the end of the traceback."""
    headline = f"{type(exc).__name__}: {exc}"
    trace = "".join(traceback.format_exception(exc))[-MAX_TRACEBACK_CHARS:]
    return f"{headline}\n{trace}"


class Worker:
    """Pulls jobs from ``queue`` and runs them with ``runner`` until told to stop."""

    def __init__(self, queue: JobQueue, runner: JobRunner, options: WorkerOptions) -> None:
        self.queue = queue
        self.runner = runner
        self.options = options
        self.stop_requested = threading.Event()
        self._signals = 0
        self._ran = 0

    def request_stop(self) -> None:
        """Stop after the current job (or release it at its next progress report)."""
        self.stop_requested.set()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            log.info("worker %s: %s received, stopping", self.options.worker_id, name)
            self.request_stop()
            return
        log.warning("worker %s: second %s, stopping now", self.options.worker_id, name)
        raise JobInterrupted("stopping")

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the worker cleanly (main thread only)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def run(self) -> int:
        """The loop; returns the number of jobs run. ``once`` runs at most one job."""
        self._ran = 0
        opts = self.options
        log.info("worker %s ready", opts.worker_id)
        try:
            self._loop()
        except JobInterrupted:  # a second signal while idle or recording an outcome
            log.warning("worker %s stopped at once", opts.worker_id)
        log.info("worker %s stopped after %d job(s)", opts.worker_id, self._ran)
        return self._ran

    def _loop(self) -> None:
        opts = self.options
        while not self.stop_requested.is_set():
            try:
                job = self.queue.claim(opts.worker_id, opts.lease_seconds)
            except Exception:  # the queue retried already: wait and poll again
                log.exception("worker %s: claiming failed; retrying", opts.worker_id)
                self.stop_requested.wait(opts.poll_seconds)
                continue
            if job is None:
                if opts.once:
                    return
                self.stop_requested.wait(opts.poll_seconds)
                continue
            self.run_job(job)
            self._ran += 1
            if opts.once:
                return

    def run_job(self, job: JobRecord) -> Outcome:
        """Run one claimed job and record how it ended; never raises for a job's failure."""
        opts = self.options
        log.info(
            "worker %s: job %s (%s) attempt %d", opts.worker_id, job.id, job.kind, job.attempts
        )
        monitor = JobMonitor(
            self.queue, job, opts.worker_id, opts.lease_seconds, self.stop_requested
        )
        try:
            with monitor:
                monitor.report(0.0, "started")
                result = self.runner(job, monitor.report)
        except JobInterrupted as stop:
            return self._interrupted(job, stop)
        except Exception as exc:
            log.warning("job %s failed: %s: %s", job.id, type(exc).__name__, exc)
            return self._record(job, partial(self._fail, job, exc))
        return self._record(job, partial(self._complete, job, result))

    def _interrupted(self, job: JobRecord, stop: JobInterrupted) -> Outcome:
        if stop.reason == "stopping":
            self._record(job, partial(self.queue.release, job.id, self.options.worker_id))
            log.info("job %s released", job.id)
            return "released"
        log.info("job %s stopped: %s", job.id, stop.reason)
        return stop.reason

    def _complete(self, job: JobRecord, result: dict[str, Any]) -> Outcome:
        if self.queue.complete(job.id, self.options.worker_id, result):
            log.info("job %s succeeded: %s", job.id, result)
            return "succeeded"
        return "lease lost"

    def _fail(self, job: JobRecord, exc: Exception) -> Outcome:
        after = self.queue.fail(job.id, self.options.worker_id, describe_failure(exc))
        if after is None:
            return "lease lost"
        return "failed" if after.status == "failed" else "retrying"

    def _record(self, job: JobRecord, write: Callable[[], Any]) -> Any:
        """Write the outcome; if the database stays down, leave it to the lease to expire."""
        try:
            return write()
        except Exception:
            log.exception("job %s: could not record its outcome; its lease will expire", job.id)
            return "lease lost"
