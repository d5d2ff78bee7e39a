"""Positional truth on the induction toy (issue 18, item 5): the circuit resolved by span puts
each edge of the mechanism at the position where it works, and the corruption decides which of
them any method can see.

At the last read position (``A-second``) the model predicts the token that followed the
earlier occurrence of the current token. The previous-token head writes "the previous token
was A" into the residual stream at ``B-first``; the induction head's key reads it there, and
its query, at ``A-second``, finds it. The truth (which heads play which role) comes from the
toy's head detectors (``induction_ground_truth``), not from the scores under test.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from circuitreg.schema.names import edge_name
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.groundtruth import induction_ground_truth
from circuitreg.workers.methods.base import ScoreResult
from circuitreg.workers.methods.registry import default_registry
from circuitreg.workers.models import load_model
from circuitreg.workers.tasks.base import TaskContext
from circuitreg.workers.tasks.registry import build_task

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy() -> Any:
    return load_model("toy:induction", "cpu")


def _run(
    loaded: Any, corrupt: str, positions: str, method: str = "eap"
) -> tuple[ScoreResult, ComputationalGraph]:
    task = build_task(
        f"induction:n=32,read=last,corrupt={corrupt}", context=TaskContext.from_loaded(loaded)
    )
    graph = ComputationalGraph.from_model(loaded.bridge)
    info = default_registry().get(method)
    result = info.fn(loaded.bridge, task, graph, info.config({"positions": positions}))
    assert result.position_scores is not None and result.positions is not None
    return result, graph


def _at(result: ScoreResult, graph: ComputationalGraph, edge: str) -> torch.Tensor:
    assert result.position_scores is not None
    return result.position_scores[graph.edge_index(edge)].abs()


def _label(result: ScoreResult, name: str) -> int:
    assert result.positions is not None
    return result.positions.labels.index(name)


@pytest.mark.parametrize("method", ["eap", "eap_ig"])
def test_key_at_b_first_and_query_at_a_second_outrank_every_rival(toy: Any, method: str) -> None:
    truth = induction_ground_truth(toy.bridge)
    prev, ind = truth.previous_token_heads[0][0], truth.induction_heads[0][0]
    result, graph = _run(toy, "first", "spans", method)
    scores = result.position_scores
    assert scores is not None
    b_first, a_second = _label(result, "B-first"), _label(result, "A-second")
    key = _at(result, graph, edge_name(prev, ind, "k"))
    # the previous-token head's output reaches the induction head's key at B-first ...
    assert int(key.argmax()) == b_first
    # ... above every other writer's edge into that key, at any position
    rivals = [graph.edge_index(e) for e in graph.edges if e.endswith(f"{ind}<k>")]
    into_key = scores[rivals].abs()
    assert float(into_key.max()) == pytest.approx(float(key[b_first]))
    # the induction head's query works at A-second, above its query edges anywhere else
    query = [graph.edge_index(e) for e in graph.edges if e.endswith(f"{ind}<q>")]
    into_query = scores[query].abs()
    best = divmod(int(into_query.argmax()), into_query.shape[1])
    assert best[1] == a_second
    # and every span's scores add up to the unpositioned run's
    assert torch.allclose(
        scores.double().sum(-1), result.edge_scores.double(), rtol=1e-5, atol=1e-6
    )


def test_index_mode_finds_the_same_positions(toy: Any) -> None:
    truth = induction_ground_truth(toy.bridge)
    prev, ind = truth.previous_token_heads[0][0], truth.induction_heads[0][0]
    spans, graph = _run(toy, "first", "spans")
    index, _ = _run(toy, "first", "index")
    assert spans.positions is not None and index.positions is not None
    b_first = spans.positions.indices[_label(spans, "B-first")]
    key = _at(index, graph, edge_name(prev, ind, "k"))
    assert int(key.argmax()) == b_first
    # a span that sits at one index in every prompt scores what that index scores
    assert spans.position_scores is not None and index.position_scores is not None
    assert b_first is not None
    assert torch.allclose(
        spans.position_scores[:, _label(spans, "B-first")], index.position_scores[:, b_first]
    )


def test_keeping_the_first_occurrence_hides_the_key_edge(toy: Any) -> None:
    """corrupt=second keeps the first copy, so the previous-token head writes the same thing
    at B-first in both runs: its key edge scores zero there, for any method."""
    truth = induction_ground_truth(toy.bridge)
    prev, ind = truth.previous_token_heads[0][0], truth.induction_heads[0][0]
    revealed, graph = _run(toy, "first", "spans")
    hidden, _ = _run(toy, "second", "spans")
    edge = edge_name(prev, ind, "k")
    b_first = _label(hidden, "B-first")
    assert float(_at(revealed, graph, edge)[b_first]) > 0.05
    assert float(_at(hidden, graph, edge)[b_first]) < 1e-6
