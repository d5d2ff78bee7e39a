"""The circuit selection of the embedded shared-subcircuit query, written as pk ranges."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, insert, select

from circuitreg.services.stores.embedded.shared import MAX_RANGES, in_selection, pk_ranges


def test_pk_ranges_are_maximal_runs() -> None:
    assert pk_ranges([5, 1, 2, 3, 3, 9, 10, 7]) == [(1, 3), (5, 5), (7, 7), (9, 10)]
    assert pk_ranges([4]) == [(4, 4)]
    assert pk_ranges([]) == []


@pytest.mark.parametrize("n_runs", [1, 3, MAX_RANGES, MAX_RANGES + 1, 40])
def test_in_selection_selects_exactly_the_pks(n_runs: int) -> None:
    """Both forms (ranges, and IN beyond MAX_RANGES runs) pick the same rows as a set test."""
    rng = random.Random(n_runs)
    table = Table("t", MetaData(), Column("pk", Integer, primary_key=True))
    engine = create_engine("sqlite://")
    table.metadata.create_all(engine)
    chosen: list[int] = []
    start = 1
    for _ in range(n_runs):
        length = rng.randint(1, 5)
        chosen += range(start, start + length)
        start += length + rng.randint(1, 3)  # a gap ends the run
    assert len(pk_ranges(chosen)) == n_runs
    with engine.begin() as conn:
        conn.execute(insert(table), [{"pk": pk} for pk in range(start + 5)])
        got = conn.execute(select(table.c.pk).where(in_selection(table.c.pk, chosen))).scalars()
        assert sorted(got) == sorted(chosen)
