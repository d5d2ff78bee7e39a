"""Migrations: Alembic revisions for the relational side, ordered Cypher files for Neo4j."""
