"""``circuitreg worker``: pull jobs from the queue and run them on one device."""

from __future__ import annotations

import logging

import typer

from circuitreg.settings import Settings, load_settings_or_exit


def register(app: typer.Typer) -> None:
    """Add the ``worker`` command to the app."""

    @app.command()
    def worker(
        device: str | None = typer.Option(
            None, help="auto, cpu, cuda or cuda:N (default: CIRCUITREG_DEVICE)."
        ),
        once: bool = typer.Option(False, "--once", help="Run at most one job, then exit."),
        worker_id: str | None = typer.Option(
            None, "--id", help="Worker name, unique per process (default: host:pid)."
        ),
        processes: int = typer.Option(
            1, "--processes", min=1, help="Worker processes to run (ids get -0, -1, ...)."
        ),
        check: bool = typer.Option(
            False,
            "--check",
            help="Health check: the queue's database and the graph store answer; then exit.",
        ),
    ) -> None:
        """Run discovery and validation jobs until SIGTERM (or one job with --once)."""
        settings = load_settings_or_exit()
        if check:
            raise typer.Exit(_health_check(settings))
        logging.basicConfig(
            level=settings.log_level,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        # Heavy imports (torch, TransformerLens) happen here, never at CLI start-up.
        from circuitreg.workers.runtime import (
            DeviceError,
            WorkerSetupError,
            resolve_device,
            run_worker,
        )
        from circuitreg.workers.runtime.pool import run_worker_processes

        try:
            if processes > 1:
                resolve_device(device or settings.device)  # a bad device fails here, once
                ids = None if worker_id is None else [f"{worker_id}-{i}" for i in range(processes)]
                code = run_worker_processes(processes, device=device, once=once, worker_ids=ids)
                typer.echo(f"{processes} worker processes stopped")
                raise typer.Exit(code)
            ran = run_worker(settings, device=device, worker_id=worker_id, once=once)
        except (DeviceError, WorkerSetupError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"worker stopped after {ran} job(s)")


def _health_check(settings: Settings) -> int:
    """0 when the relational database and the graph store are reachable, else 1 with why."""
    from sqlalchemy import text

    from circuitreg.services.db import make_engine
    from circuitreg.services.stores.factory import open_store

    try:
        engine = make_engine(settings.resolved_database_url)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        finally:
            engine.dispose()
        store = open_store(settings)
        try:
            store.ping()
        finally:
            store.close()
    except Exception as exc:  # any failure means unhealthy; say which
        typer.echo(f"unhealthy: {type(exc).__name__}: {exc}", err=True)
        return 1
    typer.echo("healthy")
    return 0
