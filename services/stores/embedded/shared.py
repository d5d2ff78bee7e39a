"""The shared-subcircuit aggregation of the embedded store, in SQL.

This is the query that must stay fast at a thousand circuits of a thousand edges, so it
lives on its own with the reasoning behind its shape.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Text, and_, case, cast, func, literal, or_, select

from .models import CircuitEdge
from .summaries import AnySelect


def _scores_json(dialect: str, circuit_pk: Any, score: Any) -> Any:
    """Aggregate ``{circuit pk: score}`` per group as JSON text.

    SQLite's JSON functions print floats with 15 digits, so there the object is assembled
    with ``printf('%.17g')``, which round-trips doubles exactly.
    """
    if dialect == "postgresql":
        return cast(func.json_object_agg(circuit_pk, score), Text)
    entry = (
        literal('"')
        + cast(circuit_pk, Text)
        + literal('":')
        # printf() turns NULL into 0.0, hence the explicit case
        + case((score.is_(None), literal("null")), else_=func.printf("%.17g", score))
    )
    return literal("{") + func.group_concat(entry, literal(",")) + literal("}")


MAX_RANGES = 8


def pk_ranges(pks: list[int]) -> list[tuple[int, int]]:
    """Sorted, distinct ``pks`` as maximal runs of consecutive values, ``(first, last)``."""
    runs: list[tuple[int, int]] = []
    for pk in sorted(set(pks)):
        if runs and pk == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], pk)
        else:
            runs.append((pk, pk))
    return runs


def in_selection(column: Any, pks: list[int]) -> Any:
    """``column IN pks``, written as a few ranges when the pks are runs of consecutive values.

    Circuits written together (a run's checkpoints, a sweep) get consecutive keys, and a
    selection of them is then a handful of runs: two comparisons per row instead of a probe
    into SQLite's temporary index of the IN list. Measured on 1,000 circuits of 1,000 edges
    (bench/store_bench.py's data): the support count over the million rows took 0.21 s with a
    1,000-item IN and 0.055 s with no filter at all, and the whole shared-subcircuit query
    over the 1,000 circuits went from 0.71-0.75 s to 0.55-0.58 s with ranges.
    """
    runs = pk_ranges(pks)
    if len(runs) > MAX_RANGES:
        return column.in_(pks)
    return or_(*(column == lo if lo == hi else and_(column >= lo, column <= hi) for lo, hi in runs))


def shared_edges_sql(
    dialect: str,
    pks: list[int],
    min_support: int,
    min_importance: float,
    one_model: bool,
    positional: bool,
    scan_index: bool,
) -> AnySelect:
    """One row per shared edge: (edge id, {circuit pk: importance} as JSON text).

    Edge ids are per model, so across models (``one_model`` false) support is counted by
    name afterwards, in Python, and every selected edge comes back.

    ``scan_index`` (SQLite, for selections that are a large share of all circuits) writes
    the circuit test as ``circuit_pk + 0``, SQLite's idiom to keep the primary key out of
    the plan, so it walks the covering index in order instead of probing per circuit and
    reading each row's score from the table.
    """
    selected: Any = CircuitEdge.circuit_pk
    if scan_index and dialect == "sqlite":
        selected = selected + 0
    in_pks = in_selection(selected, pks)
    if positional:
        return _positional_shared(dialect, in_pks, min_support, min_importance, one_model)
    return _edge_rows_shared(dialect, in_pks, min_support, min_importance, one_model)


def _edge_rows_shared(
    dialect: str, in_pks: Any, min_support: int, min_importance: float, one_model: bool
) -> AnySelect:
    """The shared edges when each (edge, circuit) is one row: circuits without positions.

    The supported edges are found by one streaming count over the covering index
    ``ix_circuit_edges_edge`` (edge_id, circuit_pk, score), and only their rows are then
    folded into one JSON object per edge: the database returns a few hundred rows, not one
    per (edge, circuit) pair.
    """
    rows_filter = [in_pks]
    if min_importance > 0:
        rows_filter.append(func.abs(CircuitEdge.score) >= min_importance)
    stmt = select(
        CircuitEdge.edge_id, _scores_json(dialect, CircuitEdge.circuit_pk, CircuitEdge.score)
    ).where(*rows_filter)
    if one_model:
        supported = (
            select(CircuitEdge.edge_id)
            .where(*rows_filter)
            .group_by(CircuitEdge.edge_id)
            .having(func.count() >= min_support)
        )
        stmt = stmt.where(CircuitEdge.edge_id.in_(supported))
    return stmt.group_by(CircuitEdge.edge_id)


def _positional_shared(
    dialect: str, in_pks: Any, min_support: int, min_importance: float, one_model: bool
) -> AnySelect:
    """The shared edges when an edge has a row per position: importances are first summed
    per (edge, circuit), and the threshold and support apply to those sums."""
    importance = func.sum(CircuitEdge.score)
    inner = (
        select(
            CircuitEdge.edge_id.label("edge_id"),
            CircuitEdge.circuit_pk.label("circuit_pk"),
            importance.label("importance"),
        )
        .where(in_pks)
        .group_by(CircuitEdge.edge_id, CircuitEdge.circuit_pk)
    )
    if min_importance > 0:
        inner = inner.having(func.abs(importance) >= min_importance)
    per = inner.subquery("per_circuit")
    outer = select(
        per.c.edge_id, _scores_json(dialect, per.c.circuit_pk, per.c.importance)
    ).group_by(per.c.edge_id)
    if one_model:
        outer = outer.having(func.count() >= min_support)
    return outer
