"""The seam between Neo4j and FalkorDB: schema statements, which the two spell differently.

Migration files are written in Neo4j's syntax (``CREATE CONSTRAINT name IF NOT EXISTS FOR
(n:L) REQUIRE n.p IS UNIQUE``, ``CREATE INDEX name IF NOT EXISTS FOR ... ON ...``, ``CREATE
VECTOR INDEX name IF NOT EXISTS FOR (n:L) ON (n.p) OPTIONS {indexConfig: {...}}``), which
Neo4j runs as they are. FalkorDB has no such syntax: its unique constraints are a
``GRAPH.CONSTRAINT`` command that needs an exact-match index first, and its ``CREATE
INDEX`` takes no name and fails when the index exists. ``FalkorDialect`` translates the few
statement shapes the migrations use and rejects anything else with the statement quoted.
Vector values differ too: FalkorDB indexes only ``vecf32(...)`` values and has its own
query procedure, so the dialect also picks the builder that writes hashed embeddings and
the one that asks the vector index for candidates. Everything else the store runs is plain
Cypher accepted by both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from . import queries
from .recording import execute

_CONSTRAINT = re.compile(
    r"^CREATE CONSTRAINT \w+ IF NOT EXISTS FOR \((\w+):(\w+)\) REQUIRE \1\.(\w+) IS UNIQUE$"
)
_NODE_INDEX = re.compile(r"^CREATE INDEX \w+ IF NOT EXISTS FOR \((\w+):(\w+)\) ON \((.+)\)$")
_VECTOR_INDEX = re.compile(
    r"^CREATE VECTOR INDEX (\w+) IF NOT EXISTS FOR \((\w+):(\w+)\) ON \(?\2\.(\w+)\)? "
    r"OPTIONS \{indexConfig: \{`vector\.dimensions`: (\d+), "
    r"`vector\.similarity_function`: '(\w+)'\}\}$"
)
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

    def set_embeddings(
        self, rows: Sequence[dict[str, Any]], *, pending: bool = False
    ) -> queries.Statement:
        """The statement setting circuits' hashed embeddings, as this engine indexes them."""
        raise NotImplementedError

    def vector_candidates(
        self, aligned: bool, k: int, vector: Sequence[float]
    ) -> queries.Statement:
        """The statement asking this engine's vector index for the ``k`` nearest circuits."""
        raise NotImplementedError


class Neo4jDialect(CypherDialect):
    """Neo4j runs the migration statements as written."""

    name: Literal["neo4j", "falkordb"] = "neo4j"
    atomic_writes = True

    def apply_schema(self, session: SchemaSession, statement: str) -> None:
        """Run it; ``IF NOT EXISTS`` makes it idempotent. A vector index populates in the
        background, and is queried only once online, so its creation waits for that."""
        session.run(statement, {})
        if m := _VECTOR_INDEX.match(" ".join(statement.split())):
            execute(session, queries.await_index(m[1]))

    def set_embeddings(
        self, rows: Sequence[dict[str, Any]], *, pending: bool = False
    ) -> queries.Statement:
        """Plain float lists: what Neo4j's vector index reads."""
        return queries.set_embeddings(rows, pending=pending)

    def vector_candidates(
        self, aligned: bool, k: int, vector: Sequence[float]
    ) -> queries.Statement:
        """``db.index.vector.queryNodes`` on the named index."""
        return queries.vector_candidates(aligned, k, vector)


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
        elif m := _VECTOR_INDEX.match(text):
            label, prop, dimensions, similarity = m[3], m[4], int(m[5]), m[6]
            self._index(
                session, queries.falkor_vector_index(label, prop, dimensions, similarity.lower())
            )
        elif m := _REL_INDEX.match(text):
            self._index(session, queries.falkor_relationship_index(m[2], m[3]))
        elif m := _NODE_INDEX.match(text):
            var = m[1]
            props = [p.strip().removeprefix(f"{var}.") for p in m[3].split(",")]
            self._index(session, queries.falkor_node_index(m[2], props))
        else:
            raise ValueError(f"FalkorDB cannot apply schema statement {statement!r}")

    def set_embeddings(
        self, rows: Sequence[dict[str, Any]], *, pending: bool = False
    ) -> queries.Statement:
        """``vecf32`` values: FalkorDB's vector index ignores plain lists."""
        return queries.falkor_set_embeddings(rows, pending=pending)

    def vector_candidates(
        self, aligned: bool, k: int, vector: Sequence[float]
    ) -> queries.Statement:
        """``db.idx.vector.queryNodes`` on (:Circuit) and the embedding's attribute."""
        return queries.falkor_vector_candidates(aligned, k, vector)

    @staticmethod
    def _index(session: SchemaSession, stmt: queries.Statement) -> None:
        try:
            execute(session, stmt)
        except Exception as exc:  # the engine's error type is redis' ResponseError
            if "already indexed" not in str(exc):
                raise


NEO4J = Neo4jDialect()
FALKORDB = FalkorDialect()
