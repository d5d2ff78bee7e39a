"""Embedded graph store: SQLAlchemy tables (SQLite or PostgreSQL) with networkx queries."""

from .store import EmbeddedStore

__all__ = ["EmbeddedStore"]
