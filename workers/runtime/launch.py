"""Build a worker from the settings and run it: what ``circuitreg worker`` calls.

Everything a worker process owns (database engine, circuit store, model cache) is opened
here and closed when the loop ends, so the loop itself stays free of configuration.
"""

from __future__ import annotations

import logging

from sqlalchemy import inspect

from circuitreg.services.db.base import make_engine
from circuitreg.services.queue import JobQueue
from circuitreg.services.stores.factory import open_store
from circuitreg.settings import Settings

from .device import resolve_device
from .executors import JobExecutor
from .worker import Worker, WorkerOptions, default_worker_id

log = logging.getLogger(__name__)


class WorkerSetupError(RuntimeError):
    """The worker cannot start: say what is missing."""


def run_worker(
    settings: Settings,
    *,
    device: str | None = None,
    worker_id: str | None = None,
    once: bool = False,
    handle_signals: bool = True,
) -> int:
    """Run a worker until stopped (or one job with ``once``); returns the jobs run."""
    resolved = resolve_device(device or settings.device)
    engine = make_engine(settings.resolved_database_url)
    try:
        if not inspect(engine).has_table("jobs"):
            raise WorkerSetupError(
                f"no job tables in {engine.url.render_as_string(hide_password=True)}: "
                "run `circuitreg migrate` first"
            )
        queue = JobQueue.from_settings(settings, engine)
        store = open_store(settings)
        try:
            executor = JobExecutor(store, device=resolved)
            executor.warm_up()
            options = WorkerOptions(
                worker_id=worker_id or default_worker_id(),
                lease_seconds=settings.worker_lease_seconds,
                poll_seconds=settings.worker_poll_seconds,
                once=once,
            )
            log.info("worker %s on %s", options.worker_id, resolved)
            worker = Worker(queue, executor, options)
            if handle_signals:
                worker.install_signal_handlers()
            return worker.run()
        finally:
            store.close()
    finally:
        engine.dispose()
