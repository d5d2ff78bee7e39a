"""Circuit summaries and filters for the embedded store, as SQLAlchemy Core selects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Select, exists, select

from ..common import circuit_summary
from ..types import CircuitFilter, CircuitSummary
from .models import (
    CircuitAlias,
    CircuitRow,
    CircuitTag,
    GraphCheckpoint,
    GraphModel,
    GraphTask,
    Run,
)

AnySelect = Select[*tuple[Any, ...]]

SUMMARY_COLUMNS = (
    CircuitRow.pk,
    CircuitRow.id,
    GraphModel.name.label("model"),
    GraphCheckpoint.label.label("checkpoint"),
    GraphCheckpoint.step,
    GraphTask.name.label("task"),
    Run.method,
    Run.ablation,
    Run.metric,
    Run.seed,
    CircuitRow.n_components,
    CircuitRow.n_edges,
    CircuitRow.faithfulness,
    Run.job_id,
    CircuitRow.dense_scores_uri,
    CircuitRow.created_at,
)


def summary_select() -> AnySelect:
    """Every summary column, joined from circuits to model, checkpoint, run and task."""
    return (
        select(*SUMMARY_COLUMNS)
        .select_from(CircuitRow)
        .join(GraphModel, GraphModel.id == CircuitRow.model_id)
        .join(Run, Run.id == CircuitRow.run_id)
        .join(GraphTask, GraphTask.id == Run.task_id)
        .outerjoin(GraphCheckpoint, GraphCheckpoint.id == CircuitRow.checkpoint_id)
    )


def apply_filter(stmt: AnySelect, filt: CircuitFilter) -> AnySelect:
    """Add the filter's conditions (all optional, all combined with AND)."""
    if filt.model is not None:
        stmt = stmt.where(GraphModel.name == filt.model)
    if filt.checkpoint is not None:
        stmt = stmt.where(GraphCheckpoint.label == filt.checkpoint)
    if filt.task is not None:
        stmt = stmt.where(GraphTask.name == filt.task)
    if filt.method is not None:
        stmt = stmt.where(Run.method == filt.method)
    if filt.tag is not None:
        stmt = stmt.where(
            exists().where(CircuitTag.circuit_pk == CircuitRow.pk, CircuitTag.tag == filt.tag)
        )
    if filt.alias is not None:
        stmt = stmt.where(
            exists().where(
                CircuitAlias.circuit_pk == CircuitRow.pk, CircuitAlias.alias == filt.alias
            )
        )
    if filt.min_faithfulness is not None:
        stmt = stmt.where(CircuitRow.faithfulness >= filt.min_faithfulness)
    if filt.max_faithfulness is not None:
        stmt = stmt.where(CircuitRow.faithfulness <= filt.max_faithfulness)
    if filt.min_edges is not None:
        stmt = stmt.where(CircuitRow.n_edges >= filt.min_edges)
    if filt.max_edges is not None:
        stmt = stmt.where(CircuitRow.n_edges <= filt.max_edges)
    return stmt


def load_summaries(conn: Connection, stmt: AnySelect) -> list[CircuitSummary]:
    """Run a summary select and attach each circuit's tags and aliases."""
    rows = conn.execute(stmt).mappings().all()
    pks = [row["pk"] for row in rows]
    tags = _grouped(conn, CircuitTag.circuit_pk, CircuitTag.tag, pks)
    aliases = _grouped(conn, CircuitAlias.circuit_pk, CircuitAlias.alias, pks)
    return [
        circuit_summary(row, tags.get(row["pk"], ()), aliases.get(row["pk"], ()), row["created_at"])
        for row in rows
    ]


def _grouped(conn: Connection, key: Any, value: Any, pks: Sequence[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for start in range(0, len(pks), 1000):
        chunk = pks[start : start + 1000]
        for pk, item in conn.execute(select(key, value).where(key.in_(chunk))).tuples():
            out.setdefault(pk, []).append(item)
    return out
