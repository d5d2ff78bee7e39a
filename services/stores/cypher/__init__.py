"""Cypher graph store for Neo4j and FalkorDB; every statement lives in ``queries``."""

from .dialect import FALKORDB, NEO4J, CypherDialect, FalkorDialect, Neo4jDialect
from .session import CypherSession, FalkorSession, Neo4jSession
from .store import CypherStore

__all__ = [
    "FALKORDB",
    "NEO4J",
    "CypherDialect",
    "CypherSession",
    "CypherStore",
    "FalkorDialect",
    "FalkorSession",
    "Neo4jDialect",
    "Neo4jSession",
]
