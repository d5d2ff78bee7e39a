"""Backfill the hashed mechanism embeddings of circuits stored before they existed.

A data migration, so Python rather than a .cypher file: the embedding is a feature hash
(BLAKE2b of each edge key, services/stores/embedding.py) that Cypher cannot compute. It
pages through the circuits with no ``embedding`` by id and sets both vectors from their
edge arrays (or FLOWS) and their model's role labels, as a write of a new circuit does.
Idempotent: a rerun finds nothing left to do (circuits with no weighted edge stay null).
"""

from __future__ import annotations

from circuitreg.services.stores.cypher.session import CypherSession


def apply(session: CypherSession) -> None:
    """Set the embeddings of every circuit that has none."""
    from circuitreg.services.stores.cypher.store import CypherStore

    CypherStore(session).backfill_embeddings()
