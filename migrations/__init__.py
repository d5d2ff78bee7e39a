"""Migrations: Alembic revisions for the relational side, ordered Cypher files for Neo4j."""

if __name__ != "circuitreg.migrations":  # one name per module: the folder is linked into circuitreg
    raise ImportError(f"{__name__}: import it as circuitreg.migrations")
