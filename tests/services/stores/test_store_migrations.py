"""Schema management: the Alembic chain agrees with the ORM models; Cypher migrations apply once."""

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


def test_store_alembic_matches_the_orm_models(database_url: str) -> None:
    upgrade(database_url, "heads")
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diffs = [
                d for d in compare_metadata(context, Base.metadata) if _table_of(d) in GRAPH_TABLES
            ]
        assert diffs == []
        assert set(inspect(engine).get_table_names()) >= GRAPH_TABLES
        assert len(GRAPH_TABLES) == 15  # 0002's 13 and 0005's positional two
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


def test_store_alembic_0005_indexes_older_positioned_circuits(database_url: str) -> None:
    """Downgrading 0005 keeps every circuit's rows (no table is copied while foreign keys
    cascade), and upgrading again indexes the positioned edges of circuits it finds."""
    from sqlalchemy import func, select

    from circuitreg.services.stores.embedded import EmbeddedStore

    from .conftest import corpus

    upgrade(database_url, "heads")
    store = EmbeddedStore(database_url)
    try:
        docs = corpus()
        ids = {name: store.put_circuit(docs[name]) for name in ("positional", "step500")}
        before = {name: store.get_circuit(cid) for name, cid in ids.items()}
        counts = _row_counts(store)
        downgrade(database_url, "0004")
        assert _row_counts(store) == counts
        upgrade(database_url, "heads")
        assert {name: store.get_circuit(cid) for name, cid in ids.items()} == before
        at_4 = store.edges_at(ids["positional"], position=4)
        assert [(e.name, e.position) for e in at_4] == [
            ("a0.h1->a1.h2<k>", 4),
            ("a1.h2->logits", 4),
        ]
        assert store.edges_at(ids["step500"]) == []
        with store.engine.connect() as conn:
            indexed = conn.execute(
                select(func.count()).select_from(models.PositionEdge.__table__)
            ).scalar_one()
        assert indexed == 3  # the import's three positioned edges, once each
    finally:
        store.close()


def _row_counts(store: Any) -> dict[str, int]:
    from sqlalchemy import text

    with store.engine.connect() as conn:
        return {
            table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("circuits", "circuit_edges", "circuit_components", "components")
        }


@pytest.mark.parametrize("backend", ["falkordb", "neo4j"])
def test_store_cypher_v0006_indexes_older_positioned_circuits(
    backend: str, open_backend: Any
) -> None:
    """A circuit written before V0005 has positioned FLOWS and no FLOWS_AT; V0006 adds them."""
    from .conftest import corpus

    store = open_backend(backend)
    docs = corpus()
    ids = {name: store.put_circuit(docs[name]) for name in ("positional", "step500")}
    before = store.edges_at(ids["positional"])
    document = store.get_circuit(ids["positional"])
    assert [(e.name, e.position) for e in before] == [
        ("a0.h1->a1.h2<k>", 3),
        ("a0.h1->a1.h2<k>", 4),
        ("a1.h2->logits", 4),
    ]
    # as a store before V0005 left it: no FLOWS_AT, and V0005 and V0006 not applied
    store.session.run("MATCH ()-[r:FLOWS_AT]->() DELETE r")
    store.session.run("MATCH (m:Migration) WHERE m.version IN ['0005', '0006'] DELETE m")
    assert store.edges_at(ids["positional"]) == []
    store.migrate()
    assert store.edges_at(ids["positional"]) == before
    assert store.edges_at(ids["step500"]) == []
    assert store.backfill_positions() == 0  # idempotent: nothing left to index
    assert store.get_circuit(ids["positional"]) == document  # the backfill only indexes
