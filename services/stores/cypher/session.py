"""Sessions: the one interface the Cypher store needs, with Neo4j and FalkorDB adapters.

``CypherSession.run(query, params) -> list[dict]`` is all the store uses to read; writes of
one circuit go through ``run_many`` so that Neo4j commits them in one transaction. FalkorDB
has no multi-statement transactions; there each statement is atomic and the store's
pending-then-commit labelling (see ``queries``) keeps partial writes invisible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .dialect import FALKORDB, NEO4J, CypherDialect

GRAPH_NAME = "circuitreg"


@runtime_checkable
class CypherSession(Protocol):
    """A connection to a Cypher engine."""

    dialect: CypherDialect

    def run(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run one statement; rows as dicts keyed by the RETURN names."""
        ...

    def run_many(self, statements: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Run statements in order, in one transaction where the engine has them."""
        ...

    def create_unique_constraint(self, label: str, prop: str) -> None:
        """A unique constraint in the engine's own way (used by the dialect)."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


class Neo4jSession:
    """The official driver, synchronous (workers, CLI, the embedded API process)."""

    dialect: CypherDialect = NEO4J

    def __init__(self, driver: Any, database: str | None = None) -> None:
        self.driver = driver
        self.database = database

    @classmethod
    def connect(
        cls, uri: str, *, user: str, password: str, database: str | None = None
    ) -> Neo4jSession:
        """Open a driver for ``uri`` (bolt:// or neo4j://)."""
        from neo4j import GraphDatabase

        # Server notifications off: the store reads optional properties (faithfulness,
        # job_id, ...) that most circuits lack, and Neo4j warns about each on every query.
        driver = GraphDatabase.driver(uri, auth=(user, password), notifications_min_severity="OFF")
        return cls(driver, database)

    def run(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run in an auto-committed, retried managed transaction."""
        records, _, _ = self.driver.execute_query(
            query, dict(params or {}), database_=self.database
        )
        # Every statement returns plain values, lists and maps (never nodes), so the record
        # is the row as it is; ``Record.data()`` walks each value again in Python, which was
        # half of a shared-subcircuit query's time.
        return [dict(record.items()) for record in records]

    def run_many(self, statements: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """All statements in one write transaction (retried by the driver on transients)."""

        def work(tx: Any) -> None:
            for query, params in statements:
                tx.run(query, dict(params)).consume()

        with self.driver.session(database=self.database) as session:
            session.execute_write(work)

    def create_unique_constraint(self, label: str, prop: str) -> None:
        """Neo4j expresses constraints in Cypher; the dialect never calls this."""
        raise NotImplementedError("Neo4j constraints are Cypher statements")

    def close(self) -> None:
        """Close the driver."""
        self.driver.close()


def _plain(value: Any) -> Any:
    """FalkorDB returns maps as OrderedDicts; answers use plain dicts and lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class FalkorSession:
    """FalkorDB through its Python client: embedded (falkordblite) or a server."""

    dialect: CypherDialect = FALKORDB

    def __init__(self, db: Any, graph: str = GRAPH_NAME, *, owns_db: bool = True) -> None:
        self.db = db
        self.graph = db.select_graph(graph)
        self.owns_db = owns_db

    @classmethod
    def open_embedded(
        cls, directory: Path, graph: str = GRAPH_NAME, *, timeout_s: float = 120.0
    ) -> FalkorSession:
        """Start (or join) the embedded FalkorDB keeping its data in ``directory``.

        ``timeout_s`` bounds one query's wait on the socket (the client's default, 5 s, is
        shorter than a shared-subcircuit query over a thousand large circuits).
        """
        try:
            from redislite.falkordb_client import FalkorDB
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise RuntimeError(
                "the falkordb backend needs falkordblite: "
                "pip install --ignore-requires-python falkordblite"
            ) from exc
        directory.mkdir(parents=True, exist_ok=True)
        return cls(FalkorDB(str(directory / "graph.db"), socket_timeout=timeout_s), graph)

    def run(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run one (atomic) query."""
        result = self.graph.query(query, dict(params or {}))
        names = [column[1] for column in result.header]
        return [dict(zip(names, map(_plain, row), strict=True)) for row in result.result_set]

    def run_many(self, statements: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Statements one after another (FalkorDB has no multi-statement transactions)."""
        for query, params in statements:
            self.run(query, params)

    def create_unique_constraint(self, label: str, prop: str) -> None:
        """``GRAPH.CONSTRAINT CREATE ... UNIQUE``; an existing one is fine."""
        try:
            self.graph.create_node_unique_constraint(label, prop)
        except Exception as exc:  # redis' ResponseError
            if "already exists" not in str(exc):
                raise

    def drop_graph(self) -> None:
        """Delete the whole graph (tests and benchmarks)."""
        try:
            self.graph.delete()
        except Exception as exc:  # an empty graph does not exist yet
            if "empty key" not in str(exc).lower() and "invalid" not in str(exc).lower():
                raise

    def close(self) -> None:
        """Stop the embedded server if this session started it."""
        if self.owns_db:
            self.db.close()
