"""The table of hashed mechanism embeddings (created by Alembic revision 0004).

One row per circuit: its canonical and role-aligned embeddings hashed to ``dimensions``
float32 values (``embedding.dense``), little-endian bytes. Kept apart from ``circuits`` so
that a similarity scan reads 1 KiB per circuit and nothing else; NULL where the circuit has
no weighted edge (it is never a candidate). The sparse embeddings are not stored: they are
recomputed from ``circuit_edges`` for the few candidates a query re-ranks.
"""

from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, LargeBinary
from sqlalchemy.orm import Mapped, mapped_column

from circuitreg.services.db.base import Base


class CircuitEmbedding(Base):
    """A circuit's hashed canonical and role-aligned embeddings."""

    __tablename__ = "circuit_embeddings"
    circuit_pk: Mapped[int] = mapped_column(
        ForeignKey("circuits.pk", ondelete="CASCADE"), primary_key=True
    )
    dimensions: Mapped[int] = mapped_column(Integer)
    canonical: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    aligned: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
