"""Activation patching by position label, index or spans (issue 18, item 3).

A node patched at a label is its output replaced at each prompt's own tokens of that label,
which is exactly every edge leaving it patched there: the hook-based sweep is held to the
engine's positional edge patches (``positional.py``), which share no code with it, on spans
that sit at different tokens in different prompts, for every ablation. The summed scores are
the all-positions patch, the unpositioned run's, and index labels are ``per_position``'s
tokens.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge

from circuitreg.workers.engine import InterventionEngine
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.base import ConfigError, ScoreResult
from circuitreg.workers.methods.patching import (
    ActivationPatchingConfig,
    activation_patching,
    patched_nodes,
)
from circuitreg.workers.positions import OTHER_SPAN, PositionMap
from circuitreg.workers.tasks.base import TaskData
from circuitreg.workers.tasks.induction import induction_task

from .test_engine_positional import with_spans
from .tiny_bridges import ATTN_ONLY, WITH_MLP

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(cfg: dict[str, Any]) -> Any:
    model = TransformerBridge.boot_native(cfg)
    model.eval()
    return model


def _task() -> TaskData:
    return with_spans(induction_task(seq_len=5, n=6, d_vocab=40, seed=3))


def _run(model: Any, task: TaskData, **options: Any) -> ScoreResult:
    graph = ComputationalGraph.from_model(model)
    return activation_patching(model, task, graph, ActivationPatchingConfig(**options))


@pytest.mark.parametrize("ablation", ["resample", "zero", "mean"])
@pytest.mark.parametrize("cfg", [ATTN_ONLY, WITH_MLP], ids=["attn_only", "ln_mlp"])
def test_a_node_at_a_span_is_its_outgoing_edges_patched_there(
    cfg: dict[str, Any], ablation: str
) -> None:
    model, task = _model(cfg), _task()
    result = _run(model, task, positions="spans", ablation=ablation, sets_per_forward=5)
    graph = ComputationalGraph.from_model(model)
    positions = PositionMap.for_task(task, "spans")
    assert result.positions == positions and positions.labels == ("X", "Y", OTHER_SPAN)
    assert result.position_scores is not None
    assert result.position_scores.shape == (graph.n_edges, positions.size)
    engine = InterventionEngine(model, graph, task, ablation=ablation, positions=positions)
    nodes = patched_nodes(graph, "all")
    rows = torch.zeros(len(nodes) * positions.size, graph.n_edges, positions.size)
    for q in range(positions.size):
        for i, node in enumerate(nodes):
            rows[q * len(nodes) + i, graph.outgoing_edges(node), q] = 1.0
    expected = (engine.evaluate(rows.flatten(1)) - engine.clean_metric()).view(positions.size, -1)
    for i, node in enumerate(nodes):
        edge = int(graph.outgoing_edges(node)[0])
        assert torch.allclose(result.position_scores[edge].double(), expected[:, i], atol=1e-5)
    assert float(expected.abs().max()) > 1e-3, "some node must matter somewhere"


@pytest.mark.parametrize("direction", ["noising", "denoising"])
@pytest.mark.parametrize("mode", ["index", "spans"])
def test_summed_scores_are_the_unpositioned_run(mode: str, direction: str) -> None:
    model, task = _model(WITH_MLP), _task()
    plain = _run(model, task, direction=direction)
    positional = _run(model, task, direction=direction, positions=mode)
    assert (positional.edge_scores - plain.edge_scores).abs().max() < 1e-5
    assert plain.node_scores is not None and positional.node_scores is not None
    assert (positional.node_scores - plain.node_scores).abs().max() < 1e-5
    assert positional.position_scores is not None
    # patch effects do not add up over positions: the sum is not the all-positions patch
    summed = positional.position_scores.sum(-1)
    assert (summed - plain.edge_scores).abs().max() > 1e-4


def test_index_labels_are_per_position_tokens() -> None:
    model, task = _model(WITH_MLP), _task()
    graph = ComputationalGraph.from_model(model, positions=task.seq_len)
    table = activation_patching(model, task, graph, ActivationPatchingConfig(per_position=True))
    per_token = activation_patching(
        model, task, graph, ActivationPatchingConfig(positions="index", sets_per_forward=7)
    )
    assert per_token.position_scores is not None
    assert per_token.position_scores.shape == (graph.n_edges, task.seq_len)
    assert (per_token.position_scores.T - table.edge_scores).abs().max() < 1e-5


def test_positions_that_cannot_be_used_are_refused() -> None:
    model, task = _model(ATTN_ONLY), _task()
    with pytest.raises(ConfigError, match="per_position"):
        ActivationPatchingConfig(positions="spans", per_position=True)
    with pytest.raises(ConfigError, match="names no spans"):
        _run(model, replace(task, spans=None), positions="spans")
    graph = ComputationalGraph.from_model(model, positions=task.seq_len)
    with pytest.raises(ConfigError, match="graph has 10 positions"):
        activation_patching(model, task, graph, ActivationPatchingConfig(positions="spans"))
