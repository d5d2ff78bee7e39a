"""Several worker processes on one machine (``circuitreg worker --processes N``).

Importing torch and TransformerLens takes seconds (tens of seconds on a busy 2-core box), so
starting each worker as a fresh interpreter is slow. The workers are started from a
``forkserver`` that has imported the heavy modules once (``PRELOAD``); each worker is then a
fork of that clean server: a separate process with its own database connections, model
cache and signal handlers, started in a fraction of a second. The forkserver never runs a
model, so forking it is safe for torch's thread pools (forking a process that has is not).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Mapping
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess

PRELOAD = ["circuitreg.workers.runtime.preload"]
ENV_PREFIX = "CIRCUITREG_"


def _context() -> ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)  # no effect once the server runs: it is per process
    return ctx


def _worker_main(
    env: dict[str, str], device: str | None, worker_id: str | None, once: bool
) -> None:
    """Entry point of one worker process: take the caller's settings, run the loop."""
    # The forkserver's environment is the one it started with; use the caller's settings.
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        del os.environ[key]
    os.environ.update(env)
    from circuitreg.settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from .launch import run_worker

    run_worker(settings, device=device, worker_id=worker_id, once=once)


def start_worker_processes(
    count: int,
    *,
    env: Mapping[str, str] | None = None,
    device: str | None = None,
    worker_ids: list[str] | None = None,
    once: bool = False,
) -> list[BaseProcess]:
    """Start ``count`` worker processes and return them (already running).

    ``env`` holds the ``CIRCUITREG_*`` settings for the workers (default: this process's).
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if worker_ids is not None and len(worker_ids) != count:
        raise ValueError(f"{len(worker_ids)} worker ids given for {count} processes")
    settings_env = dict(
        env
        if env is not None
        else {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
    )
    ctx = _context()
    processes: list[BaseProcess] = []
    for i in range(count):
        wid = worker_ids[i] if worker_ids is not None else None
        proc = ctx.Process(
            target=_worker_main,
            args=(settings_env, device, wid, once),
            name=wid or f"circuitreg-worker-{i}",
        )
        proc.start()
        processes.append(proc)
    return processes


def run_worker_processes(
    count: int,
    *,
    device: str | None = None,
    once: bool = False,
    worker_ids: list[str] | None = None,
) -> int:
    """Run ``count`` workers until they stop; SIGTERM/SIGINT is passed on to each of them.

    Returns 0 when every worker exited cleanly, else the first non-zero exit code.
    """
    processes = start_worker_processes(count, device=device, once=once, worker_ids=worker_ids)

    def forward(signum: int, _frame: object) -> None:
        for proc in processes:
            if proc.pid is not None and proc.exitcode is None:
                os.kill(proc.pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for proc in processes:
            proc.join()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    codes = [proc.exitcode or 0 for proc in processes]
    return next((code for code in codes if code != 0), 0)
