"""Activation patching by position (issue 18, item 3): every node patched at every token, on
the induction toy where the truth is known, and the unpositioned scores unchanged."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.groundtruth import induction_ground_truth
from circuitreg.workers.methods.base import ConfigError
from circuitreg.workers.methods.registry import default_registry
from circuitreg.workers.models import load_model
from circuitreg.workers.tasks.base import TaskContext
from circuitreg.workers.tasks.registry import build_task

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy() -> Any:
    return load_model("toy:induction", "cpu")


def _run(loaded: Any, **params: object) -> Any:
    task = build_task("induction:n=16,read=last", context=TaskContext.from_loaded(loaded))
    graph = ComputationalGraph.from_model(loaded.bridge)
    info = default_registry().get("activation_patching")
    return info.fn(loaded.bridge, task, graph, info.config(params)), graph, task


def test_heads_matter_where_the_mechanism_puts_them(toy: Any) -> None:
    truth = induction_ground_truth(toy.bridge)
    prev, ind = truth.previous_token_heads[0][0], truth.induction_heads[0][0]
    result, graph, task = _run(toy, positions="index")
    plain, _, _ = _run(toy)
    scores = result.position_scores
    assert scores is not None and scores.shape == (graph.n_edges, task.seq_len)
    assert result.positions is not None and result.positions.mode == "index"
    spans = task.spans
    assert spans is not None
    b_first = int((spans.index[0] == 1).nonzero()[0, 0])
    a_second = int((spans.index[0] == 2).nonzero()[0, 0])

    def node_at(node: str) -> torch.Tensor:  # an edge out of the node carries its score
        edge = next(i for i, e in enumerate(graph.edges) if e.startswith(f"{node}->"))
        return scores[edge].abs()

    # the previous-token head works at B-first, the induction head at A-second
    assert int(node_at(prev).argmax()) == b_first
    assert int(node_at(ind).argmax()) == a_second
    # the summed scores are the all-positions patch: the unpositioned run's
    assert torch.allclose(result.edge_scores, plain.edge_scores, atol=1e-6)
    assert result.n_forward > plain.n_forward


def test_spans_with_per_position_are_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError, match="per_position"):
        default_registry().get("activation_patching").config(
            {"positions": "spans", "per_position": True}
        )
