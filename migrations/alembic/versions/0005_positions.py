"""Positions (issue 18): the circuit's position axis, and the positional edges and components.

``circuits.positions`` holds a circuit's ``PositionAxis`` (JSON, null without one). The
tables ``circuit_position_edges`` and ``circuit_position_components`` hold every in-circuit
entry at a position or span, keyed by (circuit, span, position, ...) and indexed by edge,
edge end and component, each then by span and position: the indexes behind "edges at END",
"this head at S2" and "this edge at position 7". The tables of
``circuitreg.services.stores.embedded.models`` (a test compares the migrated schema with
them). Circuits stored before this revision with positioned edges (imports) get their
entries copied here by the same code a write uses (``embedded.positions.backfill``).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _position_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("circuit_pk", sa.Integer(), nullable=False),
        sa.Column("span_key", sa.String(length=200), nullable=False),
        sa.Column("position_key", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("span", sa.String(length=200), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
    ]


def _create_edges() -> None:
    op.create_table(
        "circuit_position_edges",
        *_position_columns(),
        sa.Column("edge_id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("target_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["circuit_pk"],
            ["circuits.pk"],
            name=op.f("fk_circuit_position_edges_circuit_pk_circuits"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["edge_id"],
            ["graph_edges.id"],
            name=op.f("fk_circuit_position_edges_edge_id_graph_edges"),
        ),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["components.id"],
            name=op.f("fk_circuit_position_edges_source_id_components"),
        ),
        sa.ForeignKeyConstraint(
            ["target_id"],
            ["components.id"],
            name=op.f("fk_circuit_position_edges_target_id_components"),
        ),
        sa.PrimaryKeyConstraint(
            "circuit_pk",
            "span_key",
            "position_key",
            "edge_id",
            name=op.f("pk_circuit_position_edges"),
        ),
    )
    for name, column in (("edge", "edge_id"), ("source", "source_id"), ("target", "target_id")):
        op.create_index(
            f"ix_circuit_position_edges_{name}",
            "circuit_position_edges",
            [column, "span_key", "position_key"],
        )


def _create_components() -> None:
    op.create_table(
        "circuit_position_components",
        *_position_columns(),
        sa.Column("component_id", sa.Integer(), nullable=False),
        sa.Column("hook_name", sa.String(length=200), nullable=True),
        sa.Column("in_circuit", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["circuit_pk"],
            ["circuits.pk"],
            name=op.f("fk_circuit_position_components_circuit_pk_circuits"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["component_id"],
            ["components.id"],
            name=op.f("fk_circuit_position_components_component_id_components"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "circuit_pk",
            "component_id",
            "span_key",
            "position_key",
            name=op.f("pk_circuit_position_components"),
        ),
    )
    op.create_index(
        "ix_circuit_position_components_at",
        "circuit_position_components",
        ["component_id", "span_key", "position_key"],
    )


def upgrade() -> None:
    op.add_column("circuits", sa.Column("positions", sa.JSON(), nullable=True))
    _create_edges()
    _create_components()
    from circuitreg.services.stores.embedded.positions import backfill

    backfill(op.get_bind())


def downgrade() -> None:
    op.drop_table("circuit_position_components")
    op.drop_table("circuit_position_edges")
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+), not a batch copy: recreating ``circuits``
    # would cascade-delete every row that references it while foreign keys are on.
    op.drop_column("circuits", "positions")
