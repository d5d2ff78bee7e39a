"""API commands: ``circuitreg serve`` and ``circuitreg token create``."""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import Annotated

import typer

from circuitreg.settings import load_settings_or_exit

token_app = typer.Typer(help="Manage API tokens.", no_args_is_help=True)


def _migrate_all() -> None:
    """Relational (Alembic) and graph-store migrations, idempotent, before serving."""
    from circuitreg.migrations.relational import upgrade
    from circuitreg.services.stores.factory import migrate_store

    settings = load_settings_or_exit()
    upgrade(settings.resolved_database_url)
    migrate_store(settings)


def _start_worker() -> subprocess.Popen[bytes]:
    """One worker in its own process (it loads torch; the API process never does)."""
    return subprocess.Popen([sys.executable, "-m", "circuitreg", "worker"])


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    """uvicorn re-raises the SIGTERM it shut down on; exit normally so cleanup runs."""
    raise SystemExit(128 + signum)


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (CIRCUITREG_API_HOST).")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (CIRCUITREG_API_PORT).")
    ] = None,
    with_worker: Annotated[
        bool, typer.Option("--with-worker", help="Also run one worker process.")
    ] = False,
) -> None:
    """Migrate the databases, then serve the GraphQL and REST API with uvicorn."""
    import uvicorn

    from circuitreg.services.api import create_app

    settings = load_settings_or_exit()
    _migrate_all()
    worker = _start_worker() if with_worker else None
    # Without this, uvicorn's re-raised SIGTERM would kill the process outright and
    # orphan the worker; with it, the ``finally`` below stops the worker first.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        uvicorn.run(
            create_app(settings),
            host=host or settings.api_host,
            port=port or settings.api_port,
            log_level=settings.log_level.lower(),
            access_log=False,  # the app logs each request as JSON with its request id
        )
    finally:
        if worker is not None:
            worker.terminate()  # SIGTERM: the worker finishes or releases its job
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()


def create(
    name: Annotated[str, typer.Argument(help="A unique name for the token.")],
    scope: Annotated[str, typer.Option(help="read, write or admin.")] = "read",
) -> None:
    """Create an API token and print it once (only its SHA-256 hash is stored)."""
    from circuitreg.migrations.relational import upgrade
    from circuitreg.services.api.auth import Scope, TokenError, create_token
    from circuitreg.services.db import make_engine

    if scope not in {s.value for s in Scope}:
        raise typer.BadParameter("must be read, write or admin", param_hint="--scope")
    settings = load_settings_or_exit()
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    try:
        token = create_token(engine, name, scope)
    except TokenError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    typer.echo(token)


def revoke(name: Annotated[str, typer.Argument(help="The token's name.")]) -> None:
    """Revoke a token (API processes stop accepting it within 10 seconds)."""
    from circuitreg.migrations.relational import upgrade
    from circuitreg.services.api.auth import revoke_token
    from circuitreg.services.db import make_engine

    settings = load_settings_or_exit()
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    try:
        found = revoke_token(engine, name)
    finally:
        engine.dispose()
    if not found:
        typer.echo(f"error: no live token named {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {name}")


def list_command() -> None:
    """List tokens by name, scope and dates (the tokens themselves are never stored)."""
    from circuitreg.migrations.relational import upgrade
    from circuitreg.services.api.auth import list_tokens
    from circuitreg.services.db import make_engine

    settings = load_settings_or_exit()
    upgrade(settings.resolved_database_url)
    engine = make_engine(settings.resolved_database_url)
    try:
        tokens = list_tokens(engine)
    finally:
        engine.dispose()
    if not tokens:
        typer.echo("no tokens (create one with `circuitreg token create NAME`)")
    for info in tokens:
        state = "live" if info.revoked_at is None else f"revoked {info.revoked_at:%Y-%m-%d}"
        typer.echo(f"{info.name:<24} {info.scope:<6} {info.created_at:%Y-%m-%d %H:%M}  {state}")


def register(app: typer.Typer) -> None:
    """Add ``serve`` and the ``token`` group to the app."""
    app.command()(serve)
    token_app.command("create")(create)
    token_app.command("revoke")(revoke)
    token_app.command("list")(list_command)
    app.add_typer(token_app, name="token")
