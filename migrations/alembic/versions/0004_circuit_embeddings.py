"""Mechanism embeddings: the circuit_embeddings table, backfilled for stored circuits.

The table of ``circuitreg.services.stores.embedded.embedding_tables`` (a test compares the
migrated schema with it). Circuits stored before this revision get their hashed canonical
and role-aligned embeddings here, computed by the same code a write uses
(``embedded.vectors.backfill``), so that ``similar_circuits`` finds them.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "circuit_embeddings",
        sa.Column("circuit_pk", sa.Integer(), nullable=False),
        sa.Column("dimensions", sa.Integer(), nullable=False),
        sa.Column("canonical", sa.LargeBinary(), nullable=True),
        sa.Column("aligned", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["circuit_pk"],
            ["circuits.pk"],
            name=op.f("fk_circuit_embeddings_circuit_pk_circuits"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("circuit_pk", name=op.f("pk_circuit_embeddings")),
    )
    from circuitreg.services.stores.embedded.vectors import backfill

    backfill(op.get_bind())


def downgrade() -> None:
    op.drop_table("circuit_embeddings")
