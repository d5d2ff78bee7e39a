"""Find, order and apply the Cypher migration files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from circuitreg.services.stores.cypher import queries
from circuitreg.services.stores.cypher.dialect import CypherDialect
from circuitreg.services.stores.cypher.recording import execute
from circuitreg.services.stores.cypher.session import CypherSession

MIGRATIONS_DIR = Path(__file__).resolve().parent
_FILE = re.compile(r"^V(?P<version>\d{4})__(?P<name>[a-z0-9_]+)\.cypher$")


@dataclass(frozen=True)
class CypherMigration:
    """One migration file: its version, description and statements."""

    version: str
    description: str
    statements: tuple[str, ...]


def _statements(text: str) -> tuple[str, ...]:
    lines = [line for line in text.splitlines() if not line.strip().startswith("//")]
    return tuple(s.strip() for s in "\n".join(lines).split(";") if s.strip())


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[CypherMigration]:
    """The migration files in version order; a badly named .cypher file is an error."""
    found = []
    for path in sorted(directory.glob("*.cypher")):
        m = _FILE.match(path.name)
        if not m:
            raise ValueError(f"Cypher migration {path.name!r} is not named V0001__name.cypher")
        found.append(CypherMigration(m["version"], m["name"], _statements(path.read_text("utf-8"))))
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate Cypher migration versions in {directory}")
    return found


def apply_cypher_migrations(
    session: CypherSession, dialect: CypherDialect | None = None
) -> list[str]:
    """Apply the migrations not yet recorded; return the versions applied now."""
    dialect = dialect or session.dialect
    done = {str(row["version"]) for row in execute(session, queries.applied_migrations())}
    applied = []
    for migration in load_migrations():
        if migration.version in done:
            continue
        for statement in migration.statements:
            dialect.apply_schema(session, statement)
        execute(
            session,
            queries.record_migration(
                migration.version, migration.description, datetime.now(UTC).isoformat()
            ),
        )
        applied.append(migration.version)
    return applied
