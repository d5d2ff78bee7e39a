"""Typed tables of the embedded graph store (created by Alembic revision 0002).

Layout choices that the queries depend on:

* Components are scoped to a model (one row per model + name + position) and shared by every
  circuit of that model, so "which circuits use a0.h1" is one indexed lookup.
* Canonical edge names get their own per-model table (``graph_edges``) and circuits refer to
  them by integer id: the shared-subcircuit query then groups a narrow integer table
  (``circuit_edges``) by edge id through the covering index ``ix_circuit_edges_edge``
  (edge id, circuit, score) instead of grouping strings.
* ``position_key`` is the position or -1, because NULLs never collide in a unique constraint.
* Circuits have an integer surrogate key (``pk``) beside their content id to keep the large
  per-edge table small.
* Positions (issue 18, revision 0005): a circuit with a position axis (``circuits.positions``)
  keeps its summed edges and components in the tables above, its graph, and its positional
  ones in ``circuit_position_edges`` / ``circuit_position_components``, which also index the
  positioned entries of circuits without an axis. Their keys carry ``span_key`` (the span or
  ``''``), and their indexes answer "edges at END" (primary key: circuit, span, position),
  "this head at S2" (by component id, span, position: the model's position-free row of the
  component) and "this edge at position 7" (by edge id, span, position).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from circuitreg.services.db.base import Base

NO_POSITION = -1
NO_SPAN = ""


class GraphModel(Base):
    """A model as the graph store knows it (from the circuits' ``ModelRef``)."""

    __tablename__ = "graph_models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    architecture: Mapped[str] = mapped_column(String(100))
    n_layers: Mapped[int] = mapped_column(Integer)
    n_heads: Mapped[int] = mapped_column(Integer)
    d_model: Mapped[int | None] = mapped_column(Integer, default=None)
    parallel_attn_mlp: Mapped[bool] = mapped_column(Boolean)
    attn_only: Mapped[bool] = mapped_column(Boolean)


class GraphCheckpoint(Base):
    """A checkpoint of a model; ``step`` orders evolution queries."""

    __tablename__ = "graph_checkpoints"
    __table_args__ = (UniqueConstraint("model_id", "label"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("graph_models.id", ondelete="CASCADE"))
    label: Mapped[str] = mapped_column(String(200))
    step: Mapped[int | None] = mapped_column(Integer, default=None)
    revision: Mapped[str | None] = mapped_column(String(200), default=None)


class GraphTask(Base):
    """A task name shared by circuits of every model."""

    __tablename__ = "graph_tasks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)


class Run(Base):
    """How one circuit was found: method, parameters, ablation, data and code versions.

    One run per circuit (``circuit_id`` is its key): the circuit id already hashes everything
    that makes two runs the same, so a retried job lands on the same run row.
    """

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    circuit_id: Mapped[str] = mapped_column(String(40), unique=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("graph_tasks.id"))
    task_spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    method: Mapped[str] = mapped_column(String(200), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    ablation: Mapped[str] = mapped_column(String(100))
    metric: Mapped[str] = mapped_column(String(100))
    seed: Mapped[int | None] = mapped_column(Integer, default=None)
    corruption: Mapped[str | None] = mapped_column(String(500), default=None)
    dataset_hash: Mapped[str | None] = mapped_column(String(128), default=None)
    n_examples: Mapped[int | None] = mapped_column(Integer, default=None)
    code_version: Mapped[str | None] = mapped_column(String(200), default=None)
    tl_version: Mapped[str | None] = mapped_column(String(100), default=None)
    job_id: Mapped[str | None] = mapped_column(String(200), default=None)


class CircuitRow(Base):
    """A stored circuit, keyed by its content id."""

    __tablename__ = "circuits"
    pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"))
    model_id: Mapped[int] = mapped_column(ForeignKey("graph_models.id"), index=True)
    checkpoint_id: Mapped[int | None] = mapped_column(
        ForeignKey("graph_checkpoints.id"), default=None, index=True
    )
    n_components: Mapped[int] = mapped_column(Integer)
    n_edges: Mapped[int] = mapped_column(Integer)
    positional: Mapped[bool] = mapped_column(Boolean)  # any graph edge has a token position
    positions: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)  # the axis
    faithfulness: Mapped[float | None] = mapped_column(Float, default=None)
    dense_scores_uri: Mapped[str | None] = mapped_column(String(1000), default=None)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column()


class ComponentRow(Base):
    """A component of a model, shared by all of that model's circuits."""

    __tablename__ = "components"
    __table_args__ = (UniqueConstraint("model_id", "name", "position_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("graph_models.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    position_key: Mapped[int] = mapped_column(Integer)
    position: Mapped[int | None] = mapped_column(Integer, default=None)
    kind: Mapped[str] = mapped_column(String(20))
    layer: Mapped[int | None] = mapped_column(Integer, default=None)
    head: Mapped[int | None] = mapped_column(Integer, default=None)
    hook_name: Mapped[str | None] = mapped_column(String(200), default=None)


class GraphEdge(Base):
    """A canonical edge name of a model (``src->dst<r>``), shared by its circuits."""

    __tablename__ = "graph_edges"
    __table_args__ = (UniqueConstraint("model_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("graph_models.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(220))
    source: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(100))
    receiver: Mapped[str | None] = mapped_column(String(1), default=None)


class CircuitComponent(Base):
    """Membership of a component in a circuit, with its node score."""

    __tablename__ = "circuit_components"
    circuit_pk: Mapped[int] = mapped_column(
        ForeignKey("circuits.pk", ondelete="CASCADE"), primary_key=True
    )
    component_id: Mapped[int] = mapped_column(
        ForeignKey("components.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    score: Mapped[float | None] = mapped_column(Float, default=None)
    in_circuit: Mapped[bool] = mapped_column(Boolean)


class CircuitEdge(Base):
    """An in-circuit edge: which canonical edge, between which components, how important."""

    __tablename__ = "circuit_edges"
    __table_args__ = (Index("ix_circuit_edges_edge", "edge_id", "circuit_pk", "score"),)
    circuit_pk: Mapped[int] = mapped_column(
        ForeignKey("circuits.pk", ondelete="CASCADE"), primary_key=True
    )
    edge_id: Mapped[int] = mapped_column(ForeignKey("graph_edges.id"), primary_key=True)
    position_key: Mapped[int] = mapped_column(Integer, primary_key=True)
    position: Mapped[int | None] = mapped_column(Integer, default=None)
    source_id: Mapped[int] = mapped_column(ForeignKey("components.id"))
    target_id: Mapped[int] = mapped_column(ForeignKey("components.id"))
    score: Mapped[float | None] = mapped_column(Float, default=None)


class PositionEdge(Base):
    """An in-circuit edge at a position or span, for the position queries (revision 0005).

    ``source_id`` and ``target_id`` are the model's position-free rows of the edge's ends,
    so "which circuits have this head at S2" is one index range per end.
    """

    __tablename__ = "circuit_position_edges"
    __table_args__ = (
        Index("ix_circuit_position_edges_edge", "edge_id", "span_key", "position_key"),
        Index("ix_circuit_position_edges_source", "source_id", "span_key", "position_key"),
        Index("ix_circuit_position_edges_target", "target_id", "span_key", "position_key"),
    )
    circuit_pk: Mapped[int] = mapped_column(
        ForeignKey("circuits.pk", ondelete="CASCADE"), primary_key=True
    )
    span_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    position_key: Mapped[int] = mapped_column(Integer, primary_key=True)
    edge_id: Mapped[int] = mapped_column(ForeignKey("graph_edges.id"), primary_key=True)
    position: Mapped[int | None] = mapped_column(Integer, default=None)
    span: Mapped[str | None] = mapped_column(String(200), default=None)
    source_id: Mapped[int] = mapped_column(ForeignKey("components.id"))
    target_id: Mapped[int] = mapped_column(ForeignKey("components.id"))
    score: Mapped[float | None] = mapped_column(Float, default=None)


class PositionComponent(Base):
    """A component of a circuit at a position or span (revision 0005); ``component_id`` is
    the model's position-free row of its name (kind, layer and head follow from the name;
    the hook name is the document's own)."""

    __tablename__ = "circuit_position_components"
    __table_args__ = (
        Index("ix_circuit_position_components_at", "component_id", "span_key", "position_key"),
    )
    circuit_pk: Mapped[int] = mapped_column(
        ForeignKey("circuits.pk", ondelete="CASCADE"), primary_key=True
    )
    component_id: Mapped[int] = mapped_column(
        ForeignKey("components.id", ondelete="CASCADE"), primary_key=True
    )
    span_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    position_key: Mapped[int] = mapped_column(Integer, primary_key=True)
    position: Mapped[int | None] = mapped_column(Integer, default=None)
    span: Mapped[str | None] = mapped_column(String(200), default=None)
    hook_name: Mapped[str | None] = mapped_column(String(200), default=None)
    score: Mapped[float | None] = mapped_column(Float, default=None)
    in_circuit: Mapped[bool] = mapped_column(Boolean)


class ComponentLabel(Base):
    """A role label (e.g. ``induction head``) on a model's component, whatever the position."""

    __tablename__ = "component_labels"
    __table_args__ = (UniqueConstraint("model_id", "component", "label"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("graph_models.id", ondelete="CASCADE"))
    component: Mapped[str] = mapped_column(String(100))
    label: Mapped[str] = mapped_column(String(200), index=True)


class CircuitTag(Base):
    """A free tag on a circuit."""

    __tablename__ = "circuit_tags"
    circuit_pk: Mapped[int] = mapped_column(
        ForeignKey("circuits.pk", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(200), primary_key=True, index=True)


class CircuitAlias(Base):
    """A unique alias (e.g. ``ioi/canonical``) naming one circuit."""

    __tablename__ = "circuit_aliases"
    alias: Mapped[str] = mapped_column(String(200), primary_key=True)
    circuit_pk: Mapped[int] = mapped_column(
        ForeignKey("circuits.pk", ondelete="CASCADE"), index=True
    )


class ValidationRow(Base):
    """One validation result of a circuit; ``key`` hashes the result so re-adding is a no-op."""

    __tablename__ = "validation_results"
    __table_args__ = (UniqueConstraint("circuit_pk", "key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    circuit_pk: Mapped[int] = mapped_column(ForeignKey("circuits.pk", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column()
