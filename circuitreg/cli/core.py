"""Core commands: ``migrate``, ``train-toy`` and ``demo``."""

from __future__ import annotations

import typer

from circuitreg.settings import load_settings_or_exit


def register(app: typer.Typer) -> None:
    """Add the core commands to the app."""

    @app.command()
    def migrate() -> None:
        """Apply the relational (Alembic) and graph-store migrations."""
        from circuitreg.migrations.relational import upgrade
        from circuitreg.services.stores.factory import migrate_store

        settings = load_settings_or_exit()
        upgrade(settings.resolved_database_url)
        typer.echo(f"relational database at head: {settings.resolved_database_url}")
        migrate_store(settings)
        typer.echo(f"graph store ({settings.graph_backend}) migrated")

    @app.command()
    def demo(
        seed: int = typer.Option(0, help="Seed of the toy model's training run."),
        d_model: int | None = typer.Option(None, help="Width of the toy model (default 64)."),
        checkpoints: int = typer.Option(12, min=2, help="Checkpoints to discover circuits at."),
    ) -> None:
        """Train the toy, discover and validate its induction circuit, store it, query the API."""
        from circuitreg.demo import run_demo

        raise typer.Exit(
            run_demo(load_settings_or_exit(), seed=seed, d_model=d_model, n_checkpoints=checkpoints)
        )
