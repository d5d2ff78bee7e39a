"""Open the configured circuit store: ``CIRCUITREG_GRAPH_BACKEND`` picks the backend.

Backends are imported lazily so that a deployment on the embedded store needs neither the
neo4j driver configured nor FalkorDB installed.
"""

from __future__ import annotations

from circuitreg.settings import Settings, get_settings

from .common import StoreError
from .types import GraphStore


def open_store(settings: Settings | None = None) -> GraphStore:
    """A ready ``GraphStore`` for ``settings`` (default: the process settings)."""
    settings = settings or get_settings()
    backend = settings.graph_backend
    if backend == "embedded":
        from .embedded import EmbeddedStore

        return EmbeddedStore(settings.resolved_graph_database_url)
    if backend == "neo4j":
        if not settings.neo4j_uri:
            raise StoreError("CIRCUITREG_GRAPH_BACKEND=neo4j needs CIRCUITREG_NEO4J_URI")
        from .cypher import CypherStore, Neo4jSession

        return CypherStore(
            Neo4jSession.connect(
                settings.neo4j_uri,
                user=settings.neo4j_user,
                password=settings.neo4j_password,
                database=settings.neo4j_database,
            )
        )
    if backend == "falkordb":
        from .cypher import CypherStore, FalkorSession

        return CypherStore(FalkorSession.open_embedded(settings.resolved_falkordb_path))
    raise StoreError(f"unknown CIRCUITREG_GRAPH_BACKEND {backend!r}")  # pragma: no cover


def migrate_store(settings: Settings | None = None) -> None:
    """Create the configured store's tables or constraints (idempotent), then close it."""
    store = open_store(settings)
    try:
        store.migrate()
    finally:
        store.close()
