"""Schema management: Alembic 0002 agrees with the ORM models; Cypher migrations apply once."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from circuitreg.migrations.neo4j import apply_cypher_migrations, load_migrations
from circuitreg.migrations.relational import downgrade, upgrade
from circuitreg.services.db.base import Base, make_engine
from circuitreg.services.stores.cypher import FALKORDB, FalkorSession
from circuitreg.services.stores.embedded import models

GRAPH_TABLES = {
    mapper.class_.__tablename__
    for mapper in Base.registry.mappers
    if mapper.class_.__module__ == models.__name__
}


def test_store_alembic_0002_matches_the_orm_models(database_url: str) -> None:
    upgrade(database_url, "0002")
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diffs = [
                d for d in compare_metadata(context, Base.metadata) if _table_of(d) in GRAPH_TABLES
            ]
        assert diffs == []
        assert set(inspect(engine).get_table_names()) >= GRAPH_TABLES
        assert len(GRAPH_TABLES) == 13
    finally:
        engine.dispose()
    downgrade(database_url, "0001")
    engine = make_engine(database_url)
    try:
        assert not GRAPH_TABLES & set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _table_of(diff: Any) -> str | None:
    """The table an autogenerate diff entry concerns (entries are tuples or lists of them)."""
    if isinstance(diff, list):
        return _table_of(diff[0])
    for part in diff[1:]:
        name = getattr(part, "name", None)
        table = getattr(part, "table", None)
        if table is not None and getattr(table, "name", None):
            return str(table.name)
        if isinstance(part, str) and part in GRAPH_TABLES:
            return part
        if name in GRAPH_TABLES:
            return str(name)
    return None


def test_store_cypher_migrations_apply_once_and_enforce_uniqueness(falkordb_server: Any) -> None:
    session = FalkorSession(falkordb_server, f"mig_{uuid.uuid4().hex[:8]}", owns_db=False)
    try:
        versions = [m.version for m in load_migrations()]
        assert versions == sorted(versions) and versions[:2] == ["0001", "0002"]
        assert apply_cypher_migrations(session, FALKORDB) == versions
        assert apply_cypher_migrations(session, FALKORDB) == []
        constraints = {(c["label"], tuple(c["properties"])) for c in _constraints(session)}
        assert ("Circuit", ("id",)) in constraints
        assert ("Component", ("key",)) in constraints
    finally:
        session.drop_graph()


def _constraints(session: FalkorSession) -> list[dict[str, Any]]:
    return list(session.graph.list_constraints())


def test_store_cypher_migration_files_are_checked(tmp_path: Path) -> None:
    (tmp_path / "V0001__ok.cypher").write_text("// nothing\n")
    (tmp_path / "bad name.cypher").write_text("RETURN 1;")
    with pytest.raises(ValueError, match=r"not named V0001__name\.cypher"):
        load_migrations(tmp_path)


def test_store_falkor_dialect_rejects_unknown_schema(falkordb_server: Any) -> None:
    session = FalkorSession(falkordb_server, f"dia_{uuid.uuid4().hex[:8]}", owns_db=False)
    with pytest.raises(ValueError, match="FalkorDB cannot apply schema statement"):
        FALKORDB.apply_schema(session, "CREATE CONSTRAINT x FOR (n:A) REQUIRE n.b IS NODE KEY")
