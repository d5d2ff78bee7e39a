"""Graph store: models, checkpoints, tasks, runs, circuits, components, edges, labels.

The tables of ``circuitreg.services.stores.embedded.models``; a test compares this revision
with the ORM models through Alembic's autogenerate comparison, so they cannot drift apart.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = (
    "graph_models",
    "graph_tasks",
    "component_labels",
    "components",
    "graph_checkpoints",
    "graph_edges",
    "runs",
    "circuits",
    "circuit_aliases",
    "circuit_components",
    "circuit_edges",
    "circuit_tags",
    "validation_results",
)


def upgrade() -> None:
    op.create_table(
        "graph_models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("architecture", sa.String(length=100), nullable=False),
        sa.Column("n_layers", sa.Integer(), nullable=False),
        sa.Column("n_heads", sa.Integer(), nullable=False),
        sa.Column("d_model", sa.Integer(), nullable=True),
        sa.Column("parallel_attn_mlp", sa.Boolean(), nullable=False),
        sa.Column("attn_only", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_graph_models")),
        sa.UniqueConstraint("name", name=op.f("uq_graph_models_name")),
    )
    op.create_table(
        "graph_tasks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_graph_tasks")),
        sa.UniqueConstraint("name", name=op.f("uq_graph_tasks_name")),
    )
    op.create_table(
        "component_labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("component", sa.String(length=100), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["graph_models.id"],
            name=op.f("fk_component_labels_model_id_graph_models"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_component_labels")),
        sa.UniqueConstraint(
            "model_id", "component", "label", name=op.f("uq_component_labels_model_id")
        ),
    )
    op.create_index(op.f("ix_component_labels_label"), "component_labels", ["label"], unique=False)
    op.create_table(
        "components",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("position_key", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("layer", sa.Integer(), nullable=True),
        sa.Column("head", sa.Integer(), nullable=True),
        sa.Column("hook_name", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["graph_models.id"],
            name=op.f("fk_components_model_id_graph_models"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_components")),
        sa.UniqueConstraint(
            "model_id", "name", "position_key", name=op.f("uq_components_model_id")
        ),
    )
    op.create_table(
        "graph_checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("revision", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["graph_models.id"],
            name=op.f("fk_graph_checkpoints_model_id_graph_models"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_graph_checkpoints")),
        sa.UniqueConstraint("model_id", "label", name=op.f("uq_graph_checkpoints_model_id")),
    )
    op.create_table(
        "graph_edges",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=220), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("target", sa.String(length=100), nullable=False),
        sa.Column("receiver", sa.String(length=1), nullable=True),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["graph_models.id"],
            name=op.f("fk_graph_edges_model_id_graph_models"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_graph_edges")),
        sa.UniqueConstraint("model_id", "name", name=op.f("uq_graph_edges_model_id")),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("circuit_id", sa.String(length=40), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("task_spec", sa.JSON(), nullable=False),
        sa.Column("method", sa.String(length=200), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("ablation", sa.String(length=100), nullable=False),
        sa.Column("metric", sa.String(length=100), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=True),
        sa.Column("corruption", sa.String(length=500), nullable=True),
        sa.Column("dataset_hash", sa.String(length=128), nullable=True),
        sa.Column("n_examples", sa.Integer(), nullable=True),
        sa.Column("code_version", sa.String(length=200), nullable=True),
        sa.Column("tl_version", sa.String(length=100), nullable=True),
        sa.Column("job_id", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"], ["graph_tasks.id"], name=op.f("fk_runs_task_id_graph_tasks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.UniqueConstraint("circuit_id", name=op.f("uq_runs_circuit_id")),
    )
    op.create_index(op.f("ix_runs_method"), "runs", ["method"], unique=False)
    op.create_table(
        "circuits",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("checkpoint_id", sa.Integer(), nullable=True),
        sa.Column("n_components", sa.Integer(), nullable=False),
        sa.Column("n_edges", sa.Integer(), nullable=False),
        sa.Column("positional", sa.Boolean(), nullable=False),
        sa.Column("faithfulness", sa.Float(), nullable=True),
        sa.Column("dense_scores_uri", sa.String(length=1000), nullable=True),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["checkpoint_id"],
            ["graph_checkpoints.id"],
            name=op.f("fk_circuits_checkpoint_id_graph_checkpoints"),
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["graph_models.id"], name=op.f("fk_circuits_model_id_graph_models")
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_circuits_run_id_runs")),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_circuits")),
        sa.UniqueConstraint("id", name=op.f("uq_circuits_id")),
    )
    op.create_index(op.f("ix_circuits_checkpoint_id"), "circuits", ["checkpoint_id"], unique=False)
    op.create_index(op.f("ix_circuits_model_id"), "circuits", ["model_id"], unique=False)
    op.create_table(
        "circuit_aliases",
        sa.Column("alias", sa.String(length=200), nullable=False),
        sa.Column("circuit_pk", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["circuit_pk"],
            ["circuits.pk"],
            name=op.f("fk_circuit_aliases_circuit_pk_circuits"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("alias", name=op.f("pk_circuit_aliases")),
    )
    op.create_index(
        op.f("ix_circuit_aliases_circuit_pk"), "circuit_aliases", ["circuit_pk"], unique=False
    )
    op.create_table(
        "circuit_components",
        sa.Column("circuit_pk", sa.Integer(), nullable=False),
        sa.Column("component_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("in_circuit", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["circuit_pk"],
            ["circuits.pk"],
            name=op.f("fk_circuit_components_circuit_pk_circuits"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["component_id"],
            ["components.id"],
            name=op.f("fk_circuit_components_component_id_components"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("circuit_pk", "component_id", name=op.f("pk_circuit_components")),
    )
    op.create_index(
        op.f("ix_circuit_components_component_id"),
        "circuit_components",
        ["component_id"],
        unique=False,
    )
    op.create_table(
        "circuit_edges",
        sa.Column("circuit_pk", sa.Integer(), nullable=False),
        sa.Column("edge_id", sa.Integer(), nullable=False),
        sa.Column("position_key", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("target_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["circuit_pk"],
            ["circuits.pk"],
            name=op.f("fk_circuit_edges_circuit_pk_circuits"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["edge_id"], ["graph_edges.id"], name=op.f("fk_circuit_edges_edge_id_graph_edges")
        ),
        sa.ForeignKeyConstraint(
            ["source_id"], ["components.id"], name=op.f("fk_circuit_edges_source_id_components")
        ),
        sa.ForeignKeyConstraint(
            ["target_id"], ["components.id"], name=op.f("fk_circuit_edges_target_id_components")
        ),
        sa.PrimaryKeyConstraint(
            "circuit_pk", "edge_id", "position_key", name=op.f("pk_circuit_edges")
        ),
    )
    op.create_index(
        "ix_circuit_edges_edge", "circuit_edges", ["edge_id", "circuit_pk", "score"], unique=False
    )
    op.create_table(
        "circuit_tags",
        sa.Column("circuit_pk", sa.Integer(), nullable=False),
        sa.Column("tag", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["circuit_pk"],
            ["circuits.pk"],
            name=op.f("fk_circuit_tags_circuit_pk_circuits"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("circuit_pk", "tag", name=op.f("pk_circuit_tags")),
    )
    op.create_index(op.f("ix_circuit_tags_tag"), "circuit_tags", ["tag"], unique=False)
    op.create_table(
        "validation_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("circuit_pk", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["circuit_pk"],
            ["circuits.pk"],
            name=op.f("fk_validation_results_circuit_pk_circuits"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_validation_results")),
        sa.UniqueConstraint("circuit_pk", "key", name=op.f("uq_validation_results_circuit_pk")),
    )


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
