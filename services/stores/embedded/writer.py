"""Writing a circuit into the embedded tables in one transaction, idempotently.

Every shared row (model, checkpoint, task, component, canonical edge) is inserted with the
dialect's ``INSERT ... ON CONFLICT DO NOTHING`` and then read back, so two workers writing
circuits that share components never fail on each other's rows; the circuit row itself is
inserted the same way, and a writer that finds its circuit already there writes only
missing validation results. On PostgreSQL the second writer of the same id waits on the
first's row lock and then sees the row; SQLite serialises writers outright.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Table, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from circuitreg.schema import CircuitDocument, Component, ValidationResult

from ..common import (
    MODEL_SHAPE_FIELDS,
    EndpointIndex,
    check_model_shape,
    faithfulness_of,
    latest_faithfulness,
    validation_key,
)
from ..embedding import document_edges
from ..positions import (
    check_spans,
    graph_components,
    graph_edges,
    position_free_names,
    summary_counts,
)
from .models import (
    NO_POSITION,
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
from .positions import position_free_rows, write_positions
from .vectors import model_labels, refresh_aligned, write_embedding

BATCH = 2000


def insert_ignore(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> int:
    """Insert rows, skipping those that hit a unique key; return how many were new."""
    if not rows:
        return 0
    stmt: Insert
    if conn.dialect.name == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing()
    elif conn.dialect.name == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise RuntimeError(f"unsupported database dialect {conn.dialect.name!r}")
    # RETURNING counts the rows really inserted: a driver's rowcount for a batched
    # executemany is not reliable (psycopg reports -1 or the last batch only).
    stmt = stmt.returning(*table.primary_key.columns)
    added = 0
    for start in range(0, len(rows), BATCH):
        added += len(conn.execute(stmt, list(rows[start : start + BATCH])).all())
    return added


def _table(model: type[Any]) -> Table:
    table: Table = model.__table__
    return table


def _model_id(conn: Connection, doc: CircuitDocument) -> int:
    ref = doc.model
    insert_ignore(
        conn,
        _table(GraphModel),
        [
            {
                "name": ref.name,
                "architecture": ref.architecture,
                "n_layers": ref.n_layers,
                "n_heads": ref.n_heads,
                "d_model": ref.d_model,
                "parallel_attn_mlp": ref.parallel_attn_mlp,
                "attn_only": ref.attn_only,
            }
        ],
    )
    row = conn.execute(select(GraphModel).where(GraphModel.name == ref.name)).mappings().one()
    check_model_shape(ref, {f: row[f] for f in MODEL_SHAPE_FIELDS})
    return int(row["id"])


def _checkpoint_id(conn: Connection, model_id: int, doc: CircuitDocument) -> int | None:
    ref = doc.model
    if ref.checkpoint is None:
        return None
    insert_ignore(
        conn,
        _table(GraphCheckpoint),
        [
            {
                "model_id": model_id,
                "label": ref.checkpoint,
                "step": ref.step,
                "revision": ref.revision,
            }
        ],
    )
    return conn.execute(
        select(GraphCheckpoint.id).where(
            GraphCheckpoint.model_id == model_id, GraphCheckpoint.label == ref.checkpoint
        )
    ).scalar_one()


def _task_id(conn: Connection, name: str) -> int:
    insert_ignore(conn, _table(GraphTask), [{"name": name}])
    return conn.execute(select(GraphTask.id).where(GraphTask.name == name)).scalar_one()


def _component_ids(
    conn: Connection, model_id: int, doc: CircuitDocument
) -> dict[tuple[str, int], int]:
    """Ids of the model's rows of the circuit's graph components and of the position-free
    rows its positional entries refer to (inserted where missing)."""
    comps = graph_components(doc)
    insert_ignore(
        conn,
        _table(ComponentRow),
        [
            {
                "model_id": model_id,
                "name": c.name,
                "position_key": NO_POSITION if c.position is None else c.position,
                "position": c.position,
                "kind": c.kind.value,
                "layer": c.layer,
                "head": c.head,
                "hook_name": c.hook_name,
            }
            for c in comps
        ]
        + position_free_rows(model_id, position_free_names(doc)),
    )
    names = sorted({c.name for c in comps} | position_free_names(doc))
    return _component_rows(conn, model_id, names)


def _component_rows(
    conn: Connection, model_id: int, names: Sequence[str]
) -> dict[tuple[str, int], int]:
    """(name, position key) -> id of the model's component rows of ``names``."""
    found: dict[tuple[str, int], int] = {}
    for start in range(0, len(names), BATCH):
        rows = conn.execute(
            select(ComponentRow.name, ComponentRow.position_key, ComponentRow.id).where(
                ComponentRow.model_id == model_id,
                ComponentRow.name.in_(names[start : start + BATCH]),
            )
        ).all()
        found.update(((name, pos), cid) for name, pos, cid in rows)
    return found


def position_free_ids(conn: Connection, model_id: int, names: Iterable[str]) -> dict[str, int]:
    """Name -> id of the model's position-free component rows (inserted where missing)."""
    wanted = sorted(set(names))
    insert_ignore(conn, _table(ComponentRow), position_free_rows(model_id, wanted))
    rows = _component_rows(conn, model_id, wanted)
    return {name: rows[(name, NO_POSITION)] for name in wanted}


def _edge_ids(conn: Connection, model_id: int, doc: CircuitDocument) -> dict[str, int]:
    edges = {e.name: e for e in doc.circuit_edges()}
    insert_ignore(
        conn,
        _table(GraphEdge),
        [
            {
                "model_id": model_id,
                "name": name,
                "source": e.source,
                "target": e.target,
                "receiver": None if e.receiver is None else e.receiver.value,
            }
            for name, e in sorted(edges.items())
        ],
    )
    ids: dict[str, int] = {}
    names = sorted(edges)
    for start in range(0, len(names), BATCH):
        chunk = names[start : start + BATCH]
        ids.update(
            conn.execute(
                select(GraphEdge.name, GraphEdge.id).where(
                    GraphEdge.model_id == model_id, GraphEdge.name.in_(chunk)
                )
            )
            .tuples()
            .all()
        )
    return ids


def add_validations(conn: Connection, circuit_pk: int, results: Sequence[ValidationResult]) -> None:
    """Add results not already stored and refresh the circuit's latest faithfulness."""
    rows = [
        {
            "circuit_pk": circuit_pk,
            "key": validation_key(r),
            "name": r.name,
            "body": r.model_dump(mode="json"),
            "created_at": r.created_at,
        }
        for r in results
    ]
    if not insert_ignore(conn, _table(ValidationRow), rows):
        return
    if not any(faithfulness_of(r) is not None for r in results):
        return
    bodies = conn.execute(
        select(ValidationRow.body)
        .where(ValidationRow.circuit_pk == circuit_pk)
        .order_by(ValidationRow.id)
    ).scalars()
    value = latest_faithfulness(ValidationResult.model_validate(b) for b in bodies)
    conn.execute(
        _table(CircuitRow).update().where(CircuitRow.pk == circuit_pk).values(faithfulness=value)
    )


def _run_id(conn: Connection, doc: CircuitDocument, task_id: int, job_id: str | None) -> int:
    """The run row of ``doc`` (inserted unless a concurrent writer did): how it was found."""
    prov = doc.provenance
    insert_ignore(
        conn,
        _table(Run),
        [
            {
                "circuit_id": doc.id,
                "task_id": task_id,
                "task_spec": doc.task.spec,
                "method": doc.method.name,
                "params": doc.method.params,
                "ablation": doc.ablation,
                "metric": doc.metric,
                "seed": doc.seed,
                "corruption": doc.task.corruption,
                "dataset_hash": doc.task.dataset_hash,
                "n_examples": doc.task.n_examples,
                "code_version": prov.code_version,
                "tl_version": prov.transformer_lens_version,
                "job_id": job_id or prov.job_id,
            }
        ],
    )
    return int(conn.execute(select(Run.id).where(Run.circuit_id == doc.id)).scalar_one())


def _insert_members(
    conn: Connection,
    doc: CircuitDocument,
    model_id: int,
    circuit_pk: int,
    comps: Sequence[Component],
) -> None:
    """The circuit's component and edge rows, its graph's and its positional ones; plain
    inserts, as the circuit row is new."""
    comp_ids = _component_ids(conn, model_id, doc)

    def comp_id(name: str, position: int | None) -> int:
        return comp_ids[(name, NO_POSITION if position is None else position)]

    component_rows = [
        {
            "circuit_pk": circuit_pk,
            "component_id": comp_id(c.name, c.position),
            "score": c.score,
            "in_circuit": c.in_circuit,
        }
        for c in comps
    ]
    if component_rows:
        conn.execute(insert(CircuitComponent), component_rows)
    edge_ids = _edge_ids(conn, model_id, doc)
    endpoint = EndpointIndex(comps)
    edge_rows = []
    for e in graph_edges(doc):
        edge_rows.append(
            {
                "circuit_pk": circuit_pk,
                "edge_id": edge_ids[e.name],
                "position_key": NO_POSITION if e.position is None else e.position,
                "position": e.position,
                "source_id": comp_id(*endpoint(e.source, e.position)),
                "target_id": comp_id(*endpoint(e.target, e.position)),
                "score": e.score,
            }
        )
    if edge_rows:
        conn.execute(insert(CircuitEdge), edge_rows)
    write_positions(conn, doc, circuit_pk, lambda name: comp_id(name, None), edge_ids)


def write_circuit(
    conn: Connection,
    doc: CircuitDocument,
    *,
    job_id: str | None,
    dense_scores_uri: str | None,
) -> str:
    """Write ``doc`` inside the caller's transaction; return its id."""
    circuit_id = doc.id
    existing = conn.execute(select(CircuitRow.pk).where(CircuitRow.id == circuit_id)).scalar()
    if existing is not None:
        add_validations(conn, existing, doc.validation)
        return circuit_id
    model_id = _model_id(conn, doc)
    checkpoint_id = _checkpoint_id(conn, model_id, doc)
    task_id = _task_id(conn, doc.task.name)
    run_id = _run_id(conn, doc, task_id, job_id)
    check_spans(doc)
    comps = graph_components(doc)
    n_components, n_edges = summary_counts(doc)
    added = insert_ignore(
        conn,
        _table(CircuitRow),
        [
            {
                "id": circuit_id,
                "run_id": run_id,
                "model_id": model_id,
                "checkpoint_id": checkpoint_id,
                "n_components": n_components,
                "n_edges": n_edges,
                "positional": any(e.position is not None for e in graph_edges(doc)),
                "positions": None
                if doc.positions is None
                else doc.positions.model_dump(mode="json"),
                "faithfulness": latest_faithfulness(doc.validation),
                "dense_scores_uri": dense_scores_uri,
                "provenance": doc.provenance.model_dump(mode="json"),
                "created_at": doc.provenance.created_at,
            }
        ],
    )
    circuit_pk = conn.execute(select(CircuitRow.pk).where(CircuitRow.id == circuit_id)).scalar_one()
    if not added:  # a concurrent writer stored it first
        add_validations(conn, circuit_pk, doc.validation)
        return circuit_id
    _insert_members(conn, doc, model_id, circuit_pk, comps)
    before = model_labels(conn, [model_id])[model_id]
    label_rows = [
        {"model_id": model_id, "component": name, "label": label}
        for name, labels in sorted(doc.labels.items())
        for label in labels
    ]
    insert_ignore(conn, _table(ComponentLabel), label_rows)
    # The role-aligned embedding reads every label of the model, and labels this document
    # brings change the embeddings of the model's other circuits holding those components.
    labels = model_labels(conn, [model_id])[model_id]
    write_embedding(conn, circuit_pk, document_edges(doc), labels)
    relabelled = {n for n, ls in doc.labels.items() if set(ls) - set(before.get(n, ()))}
    refresh_aligned(conn, model_id, relabelled)
    add_validations(conn, circuit_pk, doc.validation)
    return circuit_id
