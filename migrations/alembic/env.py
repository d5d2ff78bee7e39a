"""Alembic environment: runs against the URL set by ``circuitreg.migrations.relational``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import pool

from circuitreg.services.db.base import make_engine

config = context.config
_url = config.get_main_option("sqlalchemy.url")
if not _url:
    raise RuntimeError("sqlalchemy.url is not set: run migrations through circuitreg migrate")
url: str = _url


def run_migrations_online() -> None:
    engine = make_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, render_as_batch=True, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
