"""The same Alembic chain runs on SQLite and on the real PostgreSQL, and matches the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from circuitreg.migrations.relational import current_revision, downgrade, upgrade
from circuitreg.services.db import Base, make_engine


def _import_all_tables() -> None:
    """Every module that declares tables, so Base.metadata is complete."""
    import importlib
    import pkgutil

    import circuitreg.services as services

    for info in pkgutil.walk_packages(services.__path__, "circuitreg.services."):
        if info.name.endswith(("tables", "models", "catalogue")) or ".tables" in info.name:
            importlib.import_module(info.name)


def test_upgrade_is_idempotent_and_matches_the_models(database_url: str) -> None:
    upgrade(database_url)
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) is not None
        assert {"models", "checkpoints", "tasks", "datasets", "api_tokens"} <= set(
            inspect(engine).get_table_names()
        )
        _import_all_tables()
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], diff
    finally:
        engine.dispose()


def test_downgrade_to_base_removes_every_table(database_url: str) -> None:
    upgrade(database_url)
    downgrade(database_url, "base")
    engine = make_engine(database_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
