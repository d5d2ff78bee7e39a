"""EAP and EAP-IG: the linearisation identity, batching invariance, the IG variants."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge

from circuitreg.workers.engine import InterventionEngine
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.base import ConfigError
from circuitreg.workers.methods.eap import EAPConfig, eap
from circuitreg.workers.methods.eap_ig import EAPIGConfig, eap_ig
from circuitreg.workers.tasks.base import TaskData
from circuitreg.workers.tasks.induction import induction_task

CFG = dict(
    n_layers=2, d_model=32, n_heads=4, d_head=8, d_vocab=40, n_ctx=24, d_mlp=64,
    attn_only=False, act_fn="gelu", normalization_type="LN", seed=2,
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup() -> tuple[Any, ComputationalGraph, TaskData]:
    model = TransformerBridge.boot_native(CFG)
    return model, ComputationalGraph.from_model(model), induction_task(5, 8, 40, seed=1)


def test_eap_equals_the_derivative_of_exact_patching(setup: Any) -> None:
    """Score_e = d metric(patch e by eps) / d eps at 0, measured by finite differences."""
    model, graph, task = setup
    result = eap(model, task, graph, EAPConfig())
    engine = InterventionEngine(model, graph, task)
    top = torch.topk(result.edge_scores.abs(), 4).indices
    eps = 1e-3
    patch = torch.zeros(2 * len(top), graph.n_edges, dtype=torch.float64)
    for i, e in enumerate(top.tolist()):
        patch[2 * i, e], patch[2 * i + 1, e] = eps, -eps
    values = engine.evaluate(patch)
    finite = (values[0::2] - values[1::2]) / (2 * eps)
    assert torch.allclose(finite.float(), result.edge_scores[top], rtol=2e-2, atol=1e-4)
    assert result.n_backward == 1 and result.edge_scores.shape == (graph.n_edges,)


def test_batched_eap_equals_per_example_eap(setup: Any) -> None:
    model, graph, task = setup
    batched = eap(model, task, graph, EAPConfig(batch_size=8))
    per_example = eap(model, task, graph, EAPConfig(batch_size=1))
    assert per_example.n_backward == task.n_examples
    assert torch.allclose(batched.edge_scores, per_example.edge_scores, atol=1e-5)


def test_denoising_eap_is_noising_eap_on_the_swapped_task(setup: Any) -> None:
    model, graph, task = setup
    denoise = eap(model, task, graph, EAPConfig(direction="denoising"))
    noise = eap(model, task, graph, EAPConfig())
    assert not torch.allclose(denoise.edge_scores, noise.edge_scores)
    with pytest.raises(ConfigError, match="resample"):
        EAPConfig(direction="denoising", ablation="zero")


def test_ig_activations_with_one_step_matches_eap_where_no_gradient_is_cut(setup: Any) -> None:
    """At alpha = 1 every placement runs the clean model. The logits input is never fixed,
    so edges into the logits score exactly as in EAP; a fixed group passes no gradient to
    its own inputs (as in EAP-IG), so edges into heads and MLPs score less."""
    model, graph, task = setup
    plain = eap(model, task, graph, EAPConfig(metric="prob")).edge_scores
    ig = eap_ig(model, task, graph, EAPIGConfig(metric="prob", steps=1, variant="activations"))
    into_logits = graph.edge_target == graph.node_index("logits")
    assert torch.allclose(ig.edge_scores[into_logits], plain[into_logits], atol=1e-7)
    assert not torch.allclose(ig.edge_scores[~into_logits], plain[~into_logits], atol=1e-7)


def test_ig_inputs_converges_with_steps_and_differs_from_eap(setup: Any) -> None:
    model, graph, task = setup
    coarse = eap_ig(model, task, graph, EAPIGConfig(steps=8)).edge_scores
    fine = eap_ig(model, task, graph, EAPIGConfig(steps=16)).edge_scores
    plain = eap(model, task, graph, EAPConfig()).edge_scores
    assert (coarse - fine).abs().max() < 0.5 * (fine - plain).abs().max()
    assert not torch.allclose(fine, plain, atol=1e-4)


def test_zero_and_mean_ablations_give_different_scores(setup: Any) -> None:
    model, graph, task = setup
    zero = eap(model, task, graph, EAPConfig(ablation="zero")).edge_scores
    mean = eap(model, task, graph, EAPConfig(ablation="mean")).edge_scores
    assert zero.isfinite().all() and mean.isfinite().all()
    assert not torch.allclose(zero, mean)


def test_ig_refuses_to_integrate_from_a_zero_input_into_a_normalised_model(setup: Any) -> None:
    """The integral diverges there (the norm's gradient grows like 1/alpha near zero input);
    the refusal names the way out. A model without a norm integrates from zero as usual."""
    model, graph, task = setup
    for variant in ("inputs", "activations"):
        with pytest.raises(ConfigError, match=r"diverges.*resample or mean ablation"):
            eap_ig(model, task, graph, EAPIGConfig(ablation="zero", variant=variant))
    mean = eap_ig(model, task, graph, EAPIGConfig(ablation="mean")).edge_scores
    assert mean.isfinite().all() and mean.abs().max() < 1.0
    unnormed = TransformerBridge.boot_native({**CFG, "normalization_type": None})
    graph = ComputationalGraph.from_model(unnormed)
    zero = eap_ig(unnormed, task, graph, EAPIGConfig(ablation="zero")).edge_scores
    assert zero.isfinite().all() and zero.abs().max() > 0


def test_progress_is_reported(setup: Any) -> None:
    model, graph, task = setup
    seen: list[float] = []
    eap_ig(model, task, graph, EAPIGConfig(steps=2, batch_size=4), lambda f, _m: seen.append(f))
    assert seen[-1] == pytest.approx(1.0) and seen == sorted(seen)
