"""The seam between Neo4j and FalkorDB: schema statements, which the two spell differently.

Migration files are written in Neo4j's syntax (``CREATE CONSTRAINT name IF NOT EXISTS FOR
(n:L) REQUIRE n.p IS UNIQUE``, ``CREATE INDEX name IF NOT EXISTS FOR ... ON ...``), which
Neo4j runs as they are. FalkorDB has no such syntax: its unique constraints are a
``GRAPH.CONSTRAINT`` command that needs an exact-match index first, and its ``CREATE
INDEX`` takes no name and fails when the index exists. ``FalkorDialect`` translates the few
statement shapes the migrations use and rejects anything else with the statement quoted.
Everything else the store runs is plain Cypher accepted by both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal, Protocol

from . import queries
from .recording import execute

_CONSTRAINT = re.compile(
    r"^CREATE CONSTRAINT \w+ IF NOT EXISTS FOR \((\w+):(\w+)\) REQUIRE \1\.(\w+) IS UNIQUE$"
)
_NODE_INDEX = re.compile(r"^CREATE INDEX \w+ IF NOT EXISTS FOR \((\w+):(\w+)\) ON \((.+)\)$")
_REL_INDEX = re.compile(
    r"^CREATE INDEX \w+ IF NOT EXISTS FOR \(\)-\[(\w+):(\w+)\]-\(\) ON \(\1\.(\w+)\)$"
)


class SchemaSession(Protocol):
    """What the dialects need of a session to change the schema."""

    def run(self, query: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run one statement."""
        ...

    def create_unique_constraint(self, label: str, prop: str) -> None:
        """Engine-specific unique constraint (FalkorDB only)."""
        ...


class CypherDialect:
    """How one engine applies a schema statement written in Neo4j syntax."""

    name: Literal["neo4j", "falkordb"]
    # One circuit's statements commit or fail together (multi-statement transactions).
    atomic_writes: bool

    def apply_schema(self, session: SchemaSession, statement: str) -> None:
        """Apply one schema statement idempotently."""
        raise NotImplementedError


class Neo4jDialect(CypherDialect):
    """Neo4j runs the migration statements as written."""

    name: Literal["neo4j", "falkordb"] = "neo4j"
    atomic_writes = True

    def apply_schema(self, session: SchemaSession, statement: str) -> None:
        """Run it; ``IF NOT EXISTS`` makes it idempotent."""
        session.run(statement, {})


class FalkorDialect(CypherDialect):
    """FalkorDB: translated indexes and ``GRAPH.CONSTRAINT`` unique constraints."""

    name: Literal["neo4j", "falkordb"] = "falkordb"
    atomic_writes = False

    def apply_schema(self, session: SchemaSession, statement: str) -> None:
        """Translate the statement, tolerating an index or constraint that already exists."""
        text = " ".join(statement.split())
        if m := _CONSTRAINT.match(text):
            label, prop = m[2], m[3]
            self._index(session, queries.falkor_node_index(label, [prop]))
            session.create_unique_constraint(label, prop)
        elif m := _REL_INDEX.match(text):
            self._index(session, queries.falkor_relationship_index(m[2], m[3]))
        elif m := _NODE_INDEX.match(text):
            var = m[1]
            props = [p.strip().removeprefix(f"{var}.") for p in m[3].split(",")]
            self._index(session, queries.falkor_node_index(m[2], props))
        else:
            raise ValueError(f"FalkorDB cannot apply schema statement {statement!r}")

    @staticmethod
    def _index(session: SchemaSession, stmt: queries.Statement) -> None:
        try:
            execute(session, stmt)
        except Exception as exc:  # the engine's error type is redis' ResponseError
            if "already indexed" not in str(exc):
                raise


NEO4J = Neo4jDialect()
FALKORDB = FalkorDialect()
