"""Positional ACDC (issue 18, item 3): decisions per positional edge on the engine's
positional patches, exact under speculation, consistent with what the engine measures.

On the planted model only two heads write, so a kept positional edge must touch them; causal
attention means no edge matters after the last read token; batching many speculative sets
per pass decides exactly as one set per pass does; and the kept positional circuit scores,
on the engine, the metric ACDC ended with.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge

from circuitreg.schema.names import parse_node
from circuitreg.workers.engine import InterventionEngine
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.acdc import ACDCConfig, acdc
from circuitreg.workers.methods.base import ConfigError
from circuitreg.workers.positions import PositionMap
from circuitreg.workers.tasks.induction import induction_task

from .test_engine_positional import with_spans
from .test_methods_acdc import CFG, LIVE_HEADS, planted_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _touches_live(node: str) -> bool:
    parsed = parse_node(node)
    return parsed.layer is None or (parsed.layer, parsed.head) in LIVE_HEADS


def test_kept_positional_edges_touch_the_planted_heads_and_the_read_tokens() -> None:
    model = planted_model()
    graph = ComputationalGraph.from_model(model)
    task = induction_task(seq_len=4, n=6, d_vocab=40, seed=1)
    result = acdc(model, task, graph, ACDCConfig(tau=1e-3, positions="index"))
    assert result.circuit is not None and result.position_scores is not None
    assert result.circuit.shape == (graph.n_edges, task.seq_len)
    assert result.positions == PositionMap.for_task(task, "index")
    kept = result.circuit.nonzero().tolist()
    assert kept, "the planted path must survive"
    source, target = graph.edge_source.tolist(), graph.edge_target.tolist()
    for edge, _position in kept:
        assert _touches_live(graph.nodes[source[edge]]) and _touches_live(graph.nodes[target[edge]])
    last_read = int(task.positions.max())
    assert not result.circuit[:, last_read + 1 :].any()
    # every kept positional edge was measured at or above tau; the summed scores add them
    assert bool((result.position_scores[result.circuit] >= 1e-3).all())
    assert torch.allclose(result.edge_scores, result.position_scores.sum(-1))


@pytest.mark.parametrize("mode", ["index", "spans"])
def test_positional_speculation_decides_exactly_like_one_set_per_pass(mode: str) -> None:
    model = TransformerBridge.boot_native(dict(CFG, seed=9))
    graph = ComputationalGraph.from_model(model)
    task = with_spans(induction_task(seq_len=4, n=4, d_vocab=40, seed=2))
    # positional edges matter less each than their sums: a smaller tau than the plain test's
    one = acdc(model, task, graph, ACDCConfig(tau=5e-6, set_batch=1, positions=mode))
    many = acdc(model, task, graph, ACDCConfig(tau=5e-6, set_batch=16, positions=mode))
    assert one.circuit is not None and many.circuit is not None
    assert torch.equal(one.circuit, many.circuit)
    assert one.position_scores is not None and many.position_scores is not None
    assert torch.allclose(one.position_scores, many.position_scores, atol=1e-5)
    assert many.n_forward < one.n_forward
    assert 0 < int(many.extra["n_kept"]) < many.circuit.numel()


@pytest.mark.parametrize("mode", ["index", "spans"])
def test_the_kept_positional_circuit_scores_the_final_metric(mode: str) -> None:
    model = planted_model()
    graph = ComputationalGraph.from_model(model)
    task = with_spans(induction_task(seq_len=4, n=6, d_vocab=40, seed=4))
    result = acdc(model, task, graph, ACDCConfig(tau=1e-3, positions=mode))
    assert result.circuit is not None and result.positions is not None
    assert result.circuit.any() and not result.circuit.all()
    engine = InterventionEngine(model, graph, task, "resample", "kl", positions=result.positions)
    kept = float(engine.evaluate_circuits(result.circuit.view(1, -1))[0])
    assert kept == pytest.approx(result.extra["final_metric"], abs=1e-6)
    # and the summed circuit is another circuit: the positions ACDC dropped mattered
    summed = float(engine.evaluate_circuits(result.circuit.any(-1).view(1, -1))[0])
    assert abs(summed - kept) > 1e-6


def test_positions_that_cannot_be_used_are_refused() -> None:
    model = TransformerBridge.boot_native(CFG)
    task = with_spans(induction_task(seq_len=4, n=4, d_vocab=40, seed=2))
    graph = ComputationalGraph.from_model(model, positions=task.seq_len)
    with pytest.raises(ConfigError, match="graph has 8 positions"):
        acdc(model, task, graph, ACDCConfig(positions="spans"))
    with pytest.raises(ConfigError, match="names no spans"):
        acdc(model, replace(task, spans=None), graph, ACDCConfig(positions="spans"))
