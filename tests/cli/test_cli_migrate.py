"""``circuitreg migrate`` brings the relational database and the configured graph store to
head, on the embedded default and on the real Neo4j, and running it again changes nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import inspect
from typer.testing import CliRunner

from circuitreg.cli import app
from circuitreg.migrations.neo4j import load_migrations
from circuitreg.services.db.base import make_engine
from circuitreg.services.stores.cypher import CypherStore
from circuitreg.settings import get_settings

runner = CliRunner()


def _migrate() -> str:
    result = runner.invoke(app, ["migrate"])
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_migrate_twice_on_the_configured_store(
    settings_graph_backend: str, request: pytest.FixtureRequest
) -> None:
    assert f"graph store ({settings_graph_backend}) migrated" in _migrate()
    assert f"graph store ({settings_graph_backend}) migrated" in _migrate()
    engine = make_engine(get_settings().resolved_database_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"jobs", "alembic_version"} <= tables
    if settings_graph_backend == "embedded":
        assert {"circuits", "circuit_edges", "components"} <= tables
        return
    connect: Callable[[], CypherStore] = request.getfixturevalue("connect_neo4j")
    store = connect()
    try:
        constraints = store.session.run(
            "SHOW CONSTRAINTS YIELD name, type, labelsOrTypes, properties"
        )
        recorded = store.session.run("MATCH (m:Migration) RETURN m.version AS v ORDER BY v")
    finally:
        store.close()
    unique = {
        (c["labelsOrTypes"][0], c["properties"][0])
        for c in constraints
        if c["type"] == "UNIQUENESS"
    }
    assert {("Circuit", "id"), ("Component", "key"), ("Run", "circuit")} <= unique
    assert [r["v"] for r in recorded] == [m.version for m in load_migrations()]  # once each
