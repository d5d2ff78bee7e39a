"""Positions in the embedded store (issue 18): writing, reading and querying positional entries.

A circuit's positional edges and components live in ``circuit_position_edges`` and
``circuit_position_components`` (see ``models``), beside its graph. Each row refers to the
model's position-free row of its component (or edge ends), so the position queries are
index ranges on (component or edge, span, position) and never read a circuit's edges:
"this head at S2" is two ranges of the edge-end indexes and one of the component index.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, func, insert, or_, select, union
from sqlalchemy.orm import Session

from circuitreg.schema import (
    CircuitDocument,
    Component,
    ComponentKind,
    Edge,
    Receiver,
    parse_node,
)
from circuitreg.schema.circuit import PositionAxis

from ..positions import position_free_names, positional_components, positional_edges
from .models import (
    NO_POSITION,
    NO_SPAN,
    CircuitRow,
    ComponentRow,
    GraphEdge,
    GraphModel,
    PositionComponent,
    PositionEdge,
)

BATCH = 2000


def position_free_rows(model_id: int, names: Iterable[str]) -> list[dict[str, Any]]:
    """``components`` rows (position-free) for ``names``, derived from the names."""
    rows = []
    for name in sorted(set(names)):
        comp = Component.from_name(name)
        rows.append(
            {
                "model_id": model_id,
                "name": name,
                "position_key": NO_POSITION,
                "position": None,
                "kind": comp.kind.value,
                "layer": comp.layer,
                "head": comp.head,
                "hook_name": comp.hook_name,
            }
        )
    return rows


def _keys(position: int | None, span: str | None) -> dict[str, Any]:
    return {
        "position_key": NO_POSITION if position is None else position,
        "span_key": NO_SPAN if span is None else span,
        "position": position,
        "span": span,
    }


def write_positions(
    conn: Connection,
    doc: CircuitDocument,
    circuit_pk: int,
    component_id: Callable[[str], int],
    edge_ids: Mapping[str, int],
) -> None:
    """The circuit's positional rows; ``component_id`` maps a name to its position-free row."""
    comp_rows = [
        {
            "circuit_pk": circuit_pk,
            "component_id": component_id(c.name),
            **_keys(c.position, c.span),
            "hook_name": c.hook_name,
            "score": c.score,
            "in_circuit": c.in_circuit,
        }
        for c in positional_components(doc)
    ]
    edge_rows = [
        {
            "circuit_pk": circuit_pk,
            "edge_id": edge_ids[e.name],
            **_keys(e.position, e.span),
            "source_id": component_id(e.source),
            "target_id": component_id(e.target),
            "score": e.score,
        }
        for e in positional_edges(doc)
    ]
    for model, rows in ((PositionComponent, comp_rows), (PositionEdge, edge_rows)):
        for start in range(0, len(rows), BATCH):
            conn.execute(insert(model), rows[start : start + BATCH])


def axis_of(circuit: CircuitRow) -> PositionAxis | None:
    """The stored position axis of a circuit row."""
    return None if circuit.positions is None else PositionAxis.model_validate(circuit.positions)


def load_components(conn: Session, circuit_pk: int) -> list[Component]:
    """A circuit's positional components."""
    rows = conn.execute(
        select(ComponentRow.name, PositionComponent)
        .join(PositionComponent, PositionComponent.component_id == ComponentRow.id)
        .where(PositionComponent.circuit_pk == circuit_pk)
    ).all()
    out = []
    for name, row in rows:
        parsed = parse_node(name)
        out.append(
            Component(
                name=name,
                kind=ComponentKind(parsed.kind),
                layer=parsed.layer,
                head=parsed.head,
                position=row.position,
                span=row.span,
                hook_name=row.hook_name,
                score=row.score,
                in_circuit=row.in_circuit,
            )
        )
    return out


def _edge_select(*where: Any) -> Any:
    return (
        select(
            GraphEdge.source,
            GraphEdge.target,
            GraphEdge.receiver,
            PositionEdge.score,
            PositionEdge.position,
            PositionEdge.span,
        )
        .join(PositionEdge, PositionEdge.edge_id == GraphEdge.id)
        .where(*where)
    )


def _edges(rows: Iterable[Sequence[Any]]) -> list[Edge]:
    return [
        Edge(
            source=src,
            target=dst,
            receiver=None if recv is None else Receiver(recv),
            score=score,
            position=position,
            span=span,
        )
        for src, dst, recv, score, position, span in rows
    ]


def _at(table: Any, position: int | None, span: str | None) -> list[Any]:
    """Conditions on a positional table's keys (None: any)."""
    conds = []
    if span is not None:
        conds.append(table.span_key == span)
    if position is not None:
        conds.append(table.position_key == position)
    return conds


def load_edges(conn: Connection | Session, circuit_pk: int) -> list[Edge]:
    """A circuit's positional edges."""
    return _edges(conn.execute(_edge_select(PositionEdge.circuit_pk == circuit_pk)).tuples())


def edges_at(
    conn: Connection,
    circuit_pk: int,
    position: int | None,
    span: str | None,
    component: str | None,
) -> list[Edge]:
    """The circuit's positional edges at the position and span, touching ``component``:
    a range of the primary key (circuit, span, position) when a span or index is given."""
    conds = [PositionEdge.circuit_pk == circuit_pk, *_at(PositionEdge, position, span)]
    if component is not None:
        conds.append(or_(GraphEdge.source == component, GraphEdge.target == component))
    return _edges(conn.execute(_edge_select(*conds)).tuples())


def _position_free_id(conn: Connection, model: str, name: str) -> int | None:
    return conn.execute(
        select(ComponentRow.id)
        .join(GraphModel, GraphModel.id == ComponentRow.model_id)
        .where(
            GraphModel.name == model,
            ComponentRow.name == name,
            ComponentRow.position_key == NO_POSITION,
        )
    ).scalar()


def component_at(
    conn: Connection, model: str, component: str, position: int | None, span: str | None
) -> dict[int, int]:
    """Circuit pk -> number of positional edges at the position touching ``component``,
    for every circuit where it is at that position (as an edge end or a component)."""
    comp_id = _position_free_id(conn, model, component)
    if comp_id is None:
        return {}
    degree: dict[int, int] = {}
    for column in (PositionEdge.source_id, PositionEdge.target_id):
        rows = conn.execute(
            select(PositionEdge.circuit_pk, func.count())
            .where(column == comp_id, *_at(PositionEdge, position, span))
            .group_by(PositionEdge.circuit_pk)
        ).tuples()
        for pk, n in rows:
            degree[pk] = degree.get(pk, 0) + n
    members = conn.execute(
        select(PositionComponent.circuit_pk).where(
            PositionComponent.component_id == comp_id,
            PositionComponent.in_circuit.is_(True),
            *_at(PositionComponent, position, span),
        )
    ).scalars()
    for pk in members:
        degree.setdefault(pk, 0)
    return degree


def circuits_with_edge_at(model: str, edge: str, position: int | None, span: str | None) -> Any:
    """A select of the pks of circuits holding ``edge`` at the position (edge index range)."""
    return (
        select(PositionEdge.circuit_pk)
        .join(GraphEdge, GraphEdge.id == PositionEdge.edge_id)
        .join(GraphModel, GraphModel.id == GraphEdge.model_id)
        .where(GraphModel.name == model, GraphEdge.name == edge, *_at(PositionEdge, position, span))
    )


def backfill(conn: Connection) -> int:
    """Index the positioned entries of circuits stored before revision 0005 (imports whose
    edges carry token positions); returns how many circuits were indexed."""
    from .documents import load_document
    from .writer import position_free_ids

    done = 0
    with Session(bind=conn) as session:
        candidates = session.execute(
            select(CircuitRow.pk, CircuitRow.id, CircuitRow.model_id)
            .where(CircuitRow.pk.in_(_positioned_circuits()))
            .order_by(CircuitRow.pk)
        ).all()
        for pk, circuit_id, model_id in candidates:
            doc = load_document(session, circuit_id)
            if doc is None:  # pragma: no cover - the row was just read
                continue
            ids = position_free_ids(conn, model_id, position_free_names(doc))
            edge_ids = dict(
                conn.execute(
                    select(GraphEdge.name, GraphEdge.id).where(
                        GraphEdge.model_id == model_id,
                        GraphEdge.name.in_(sorted({e.name for e in positional_edges(doc)})),
                    )
                )
                .tuples()
                .all()
            )
            write_positions(conn, doc, pk, ids.__getitem__, edge_ids)
            done += 1
    return done


def _positioned_circuits() -> Any:
    """Circuits with a positioned graph edge or component (written before revision 0005)."""
    from .models import CircuitComponent, CircuitEdge

    return union(
        select(CircuitEdge.circuit_pk).where(CircuitEdge.position_key != NO_POSITION),
        select(CircuitComponent.circuit_pk)
        .join(ComponentRow, ComponentRow.id == CircuitComponent.component_id)
        .where(ComponentRow.position_key != NO_POSITION),
    )
