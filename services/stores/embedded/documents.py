"""Rebuild a stored ``CircuitDocument`` from the embedded tables."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from circuitreg.schema import (
    CircuitDocument,
    Component,
    ComponentKind,
    Edge,
    MethodRef,
    ModelRef,
    Provenance,
    Receiver,
    TaskRef,
    ValidationResult,
)

from ..common import order_validation
from ..positions import component_order, edge_order
from .models import (
    CircuitComponent,
    CircuitEdge,
    CircuitRow,
    ComponentLabel,
    ComponentRow,
    GraphCheckpoint,
    GraphEdge,
    GraphModel,
    GraphTask,
    Run,
    ValidationRow,
)
from .positions import axis_of, load_components, load_edges


def _components(conn: Session, circuit_pk: int) -> list[Component]:
    """The circuit's stored graph components with their scores."""
    rows = conn.execute(
        select(ComponentRow, CircuitComponent.score, CircuitComponent.in_circuit)
        .join(CircuitComponent, CircuitComponent.component_id == ComponentRow.id)
        .where(CircuitComponent.circuit_pk == circuit_pk)
    ).all()
    return [
        Component(
            name=c.name,
            kind=ComponentKind(c.kind),
            layer=c.layer,
            head=c.head,
            position=c.position,
            hook_name=c.hook_name,
            score=score,
            in_circuit=in_circuit,
        )
        for c, score, in_circuit in rows
    ]


def _edges(conn: Session, circuit_pk: int) -> list[Edge]:
    """The circuit's graph edges with their scores."""
    rows = conn.execute(
        select(GraphEdge, CircuitEdge.score, CircuitEdge.position)
        .join(CircuitEdge, CircuitEdge.edge_id == GraphEdge.id)
        .where(CircuitEdge.circuit_pk == circuit_pk)
    ).all()
    return [
        Edge(
            source=e.source,
            target=e.target,
            receiver=None if e.receiver is None else Receiver(e.receiver),
            score=score,
            position=position,
        )
        for e, score, position in rows
    ]


def _labels(conn: Session, model_id: int, names: list[str]) -> dict[str, tuple[str, ...]]:
    """The model's free labels of ``names``."""
    labels: dict[str, list[str]] = {}
    rows = conn.execute(
        select(ComponentLabel.component, ComponentLabel.label).where(
            ComponentLabel.model_id == model_id, ComponentLabel.component.in_(names)
        )
    ).tuples()
    for name, label in rows:
        labels.setdefault(name, []).append(label)
    return {k: tuple(sorted(v)) for k, v in sorted(labels.items())}


def load_document(conn: Session, circuit_id: str) -> CircuitDocument | None:
    """The stored document (in-circuit components and edges, labels, validation) or None."""
    head = conn.execute(
        select(CircuitRow, Run, GraphModel, GraphTask.name, GraphCheckpoint)
        .join(Run, Run.id == CircuitRow.run_id)
        .join(GraphModel, GraphModel.id == CircuitRow.model_id)
        .join(GraphTask, GraphTask.id == Run.task_id)
        .outerjoin(GraphCheckpoint, GraphCheckpoint.id == CircuitRow.checkpoint_id)
        .where(CircuitRow.id == circuit_id)
    ).first()
    if head is None:
        return None
    circuit, run, model, task_name, checkpoint = head
    axis = axis_of(circuit)
    components = _components(conn, circuit.pk)
    edges = _edges(conn, circuit.pk)
    if axis is not None:  # its positional entries are beside its graph, not in it
        components.extend(load_components(conn, circuit.pk))
        edges.extend(load_edges(conn, circuit.pk))
    names = sorted({c.name for c in components})
    validation = order_validation(
        ValidationResult.model_validate(b)
        for b in conn.execute(
            select(ValidationRow.body).where(ValidationRow.circuit_pk == circuit.pk)
        ).scalars()
    )
    return CircuitDocument(
        model=ModelRef(
            name=model.name,
            architecture=model.architecture,
            checkpoint=None if checkpoint is None else checkpoint.label,
            step=None if checkpoint is None else checkpoint.step,
            revision=None if checkpoint is None else checkpoint.revision,
            n_layers=model.n_layers,
            n_heads=model.n_heads,
            d_model=model.d_model,
            parallel_attn_mlp=model.parallel_attn_mlp,
            attn_only=model.attn_only,
        ),
        task=TaskRef(
            name=task_name,
            spec=run.task_spec,
            corruption=run.corruption,
            dataset_hash=run.dataset_hash,
            n_examples=run.n_examples,
        ),
        method=MethodRef(name=run.method, params=run.params),
        ablation=run.ablation,
        metric=run.metric,
        seed=run.seed,
        components=tuple(sorted(components, key=component_order)),
        edges=tuple(sorted(edges, key=edge_order)),
        labels=_labels(conn, model.id, names),
        positions=axis,
        validation=validation,
        provenance=Provenance.model_validate(circuit.provenance),
    )
