"""Find, order and apply the Cypher migration files.

Most migrations are ``V{n}__{name}.cypher`` files of schema statements. A data migration
that Cypher cannot express (the embeddings backfill hashes edge keys) is a
``V{n}__{name}.py`` module beside them with an ``apply(session)`` function; both kinds share
one version sequence and are recorded the same way.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from circuitreg.services.stores.cypher import queries
from circuitreg.services.stores.cypher.dialect import CypherDialect
from circuitreg.services.stores.cypher.recording import execute
from circuitreg.services.stores.cypher.session import CypherSession

MIGRATIONS_DIR = Path(__file__).resolve().parent
_FILE = re.compile(r"^V(?P<version>\d{4})__(?P<name>[a-z0-9_]+)\.cypher$")
_PYTHON_FILE = re.compile(r"^V(?P<version>\d{4})__(?P<name>[a-z0-9_]+)\.py$")


@dataclass(frozen=True)
class CypherMigration:
    """One migration file: its version, description and statements."""

    version: str
    description: str
    statements: tuple[str, ...]
    apply: Callable[[CypherSession], None] | None = None


def _statements(text: str) -> tuple[str, ...]:
    lines = [line for line in text.splitlines() if not line.strip().startswith("//")]
    return tuple(s.strip() for s in "\n".join(lines).split(";") if s.strip())


def _python_apply(path: Path) -> Callable[[CypherSession], None]:
    """The ``apply`` function of a Python migration module."""
    spec = importlib.util.spec_from_file_location(f"{__package__}.{path.stem}", path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always loads
        raise ValueError(f"cannot load Python migration {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    apply: Callable[[CypherSession], None] = module.apply
    return apply


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[CypherMigration]:
    """The migration files in version order; a badly named .cypher or V*.py file is an error."""
    found = []
    for path in sorted(directory.glob("*.cypher")):
        m = _FILE.match(path.name)
        if not m:
            raise ValueError(f"Cypher migration {path.name!r} is not named V0001__name.cypher")
        found.append(CypherMigration(m["version"], m["name"], _statements(path.read_text("utf-8"))))
    for path in sorted(directory.glob("V*.py")):
        m = _PYTHON_FILE.match(path.name)
        if not m:
            raise ValueError(f"Python migration {path.name!r} is not named V0001__name.py")
        found.append(CypherMigration(m["version"], m["name"], (), _python_apply(path)))
    found.sort(key=lambda mig: mig.version)
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
        if migration.apply is not None:
            migration.apply(session)
        execute(
            session,
            queries.record_migration(
                migration.version, migration.description, datetime.now(UTC).isoformat()
            ),
        )
        applied.append(migration.version)
    return applied
