"""Migration 0003 and the queue's ORM tables agree (Alembic's autogenerate comparison)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, inspect

from circuitreg.migrations.relational import downgrade, upgrade
from circuitreg.services.db.base import make_engine
from circuitreg.services.queue.tables import JobEventRow, JobRow

QUEUE_TABLES = ("jobs", "job_events")


def test_queue_migration_matches_models(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    metadata = MetaData(naming_convention=JobRow.metadata.naming_convention)
    for table in (JobRow.__table__, JobEventRow.__table__):
        table.to_metadata(metadata)  # type: ignore[attr-defined]
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = [
            d
            for d in compare_metadata(context, metadata)
            # Only our tables: other revisions' tables are not in this metadata.
            if not (d[0] == "remove_table" and d[1].name not in QUEUE_TABLES)
            and not (d[0] == "remove_index" and d[1].table.name not in QUEUE_TABLES)
        ]
    assert diff == []
    downgrade(database_url, "0002")
    assert not set(QUEUE_TABLES) & set(inspect(engine).get_table_names())
    engine.dispose()
