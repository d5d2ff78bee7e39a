"""Cypher migrations: ordered ``V{n}__{name}.cypher`` files, applied once and recorded.

Statements are written in Neo4j's syntax and passed through the session's dialect, so the
same files set up FalkorDB. Each applied file is recorded as a (:Migration {version}) node;
statements are idempotent as well, so a run interrupted between a file and its record is
simply repeated.
"""

from .applier import MIGRATIONS_DIR, CypherMigration, apply_cypher_migrations, load_migrations

__all__ = ["MIGRATIONS_DIR", "CypherMigration", "apply_cypher_migrations", "load_migrations"]
