"""ACDC finds a planted edge, prunes dead ones, and its batched speculation changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge

from circuitreg.workers.engine import InterventionEngine
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.acdc import ACDCConfig, acdc
from circuitreg.workers.methods.base import ConfigError
from circuitreg.workers.tasks.base import TaskData
from circuitreg.workers.tasks.induction import induction_task

CFG = dict(
    n_layers=2, d_model=32, n_heads=4, d_head=8, d_vocab=40, n_ctx=24,
    attn_only=True, act_fn="gelu", normalization_type=None, seed=5,
)  # fmt: skip
LIVE_HEADS = {(0, 1), (1, 2)}


pytestmark = pytest.mark.usefixtures("one_thread")


def planted_model() -> Any:
    """Only a0.h1 and a1.h2 write to the residual; a1.h2 reads a0.h1 through its value."""
    model = TransformerBridge.boot_native(CFG)
    d_head = CFG["d_head"]
    with torch.no_grad():
        for layer in range(2):
            attn = model.blocks[layer].attn.original_component
            out_weight = attn.o.original_component.weight  # [d_model, n_heads * d_head]
            for head in range(4):
                cols = slice(head * d_head, (head + 1) * d_head)
                if (layer, head) not in LIVE_HEADS:
                    out_weight[:, cols] = 0.0
                else:
                    out_weight[:, cols] *= 4.0
            attn.v.original_component.weight.mul_(3.0)
    return model


def test_acdc_keeps_the_planted_edge_and_drops_dead_heads() -> None:
    model = planted_model()
    graph = ComputationalGraph.from_model(model)
    task = induction_task(seq_len=5, n=8, d_vocab=40, seed=0)
    planted = graph.edge_index("a0.h1->a1.h2<v>")
    engine = InterventionEngine(model, graph, task, metric="kl")
    alone = engine.evaluate(graph.mask_from_edges(["a0.h1->a1.h2<v>"]).unsqueeze(0))
    assert float(alone[0]) > 0.01, "the planted edge must matter for the test to mean anything"

    result = acdc(model, task, graph, ACDCConfig(tau=0.005))
    circuit = result.circuit
    assert circuit[planted]
    kept_nodes = set(graph.nodes_in(circuit))
    assert kept_nodes <= {"input", "a0.h1", "a1.h2", "logits"}
    assert {"a0.h1", "a1.h2"} <= kept_nodes
    assert result.edge_scores[planted] >= 0.005
    # The metric ACDC reports for its circuit is what an independent evaluation measures.
    final = engine.evaluate_circuits(circuit.unsqueeze(0))[0]
    assert float(final) == pytest.approx(result.extra["final_metric"], abs=1e-5)


def test_speculative_batching_decides_exactly_like_one_candidate_at_a_time() -> None:
    model = TransformerBridge.boot_native(dict(CFG, seed=9))
    graph = ComputationalGraph.from_model(model)
    task = induction_task(seq_len=4, n=4, d_vocab=40, seed=2)
    one = acdc(model, task, graph, ACDCConfig(tau=2e-5, set_batch=1))
    many = acdc(model, task, graph, ACDCConfig(tau=2e-5, set_batch=16))
    assert torch.equal(one.circuit, many.circuit)
    assert torch.allclose(one.edge_scores, many.edge_scores, atol=1e-5)
    assert many.n_forward < one.n_forward
    assert 0 < int(many.extra["n_kept"]) < graph.n_edges


def test_relative_tau_is_a_fraction_of_the_full_effect() -> None:
    model = planted_model()
    graph = ComputationalGraph.from_model(model)
    task = induction_task(seq_len=5, n=8, d_vocab=40, seed=0)
    engine = InterventionEngine(model, graph, task, metric="kl")
    full_effect = abs(engine.clean_metric() - engine.evaluate_circuits(
        torch.zeros(1, graph.n_edges, dtype=torch.bool))[0].item())  # fmt: skip
    assert full_effect > 0.01
    relative = acdc(model, task, graph, ACDCConfig(tau=0.2, relative_tau=True))
    absolute = acdc(model, task, graph, ACDCConfig(tau=0.2 * full_effect))
    assert torch.equal(relative.circuit, absolute.circuit)
    assert relative.extra["tau_absolute"] == pytest.approx(0.2 * full_effect)
    assert int(relative.extra["n_kept"]) > 0
    # the same fraction keeps fewer edges as it grows: tau is not ignored
    loose = acdc(model, task, graph, ACDCConfig(tau=0.001, relative_tau=True))
    assert int(loose.extra["n_kept"]) > int(relative.extra["n_kept"])


def test_relative_tau_is_refused_when_the_ablation_changes_nothing() -> None:
    model = planted_model()
    graph = ComputationalGraph.from_model(model)
    task = induction_task(seq_len=5, n=4, d_vocab=40, seed=0)
    same = TaskData("same", {}, task.clean, task.clean.clone(), task.positions, task.answers,
                    task.distractors, "corrupted = clean")  # fmt: skip
    with pytest.raises(ConfigError, match=r"0 up to rounding, with ablation='resample'"):
        acdc(model, same, graph, ACDCConfig(relative_tau=True))


def test_acdc_config_checks_and_round_trips() -> None:
    config = ACDCConfig.from_dict(
        {"tau": "0.1", "abs_value": "true", "ablation": "mean", "relative_tau": "true"}
    )
    assert config.tau == 0.1 and config.abs_value and config.metric == "kl"
    assert config.relative_tau
    assert ACDCConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="tau"):
        ACDCConfig(tau=-1.0)
