"""The unpatched-run gradient path (``engine.gradients``) gives the patch gradient at zero.

EAP and RelP read every edge's score off one probed forward and backward; the engine's
patched forward (``run_forward`` with a fixed delta, which ``test_engine_reference`` holds to
the plain formula) gives the same numbers as ``d metric / d patch`` at ``patch = 0``. Held
together in float64 to 1e-10 on the reference tests' tiny models, under every ablation and
metric kind, with and without RelP's rules, and with one writer group fixed (EAP-IG's
activations variant).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge

from circuitreg.workers.engine import EngineError, InterventionEngine, Override
from circuitreg.workers.engine.gradients import reader_gradients
from circuitreg.workers.engine.relevance import RelevanceRules
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.eap import EAPConfig, eap
from circuitreg.workers.methods.eap_ig import EAPIGConfig, eap_ig
from circuitreg.workers.tasks.induction import induction_task

from .test_engine_reference import MODELS

pytestmark = pytest.mark.usefixtures("one_thread")


def _engine(name: str, ablation: str, metric: str) -> InterventionEngine:
    model = TransformerBridge.boot_native(MODELS[name])
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():  # nonzero biases, so a lost or doubled bias shows
        for parameter in model.parameters():
            if parameter.ndim == 1:
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    model = model.to(torch.float64)
    task = induction_task(seq_len=6, n=4, d_vocab=40, seed=3)
    graph = ComputationalGraph.from_model(model)
    return InterventionEngine(model, graph, task, ablation, metric, verify=name != "parallel")


def _patch_gradient(
    engine: InterventionEngine, rules: RelevanceRules | None, override: Override | None = None
) -> torch.Tensor:
    """``d metric / d patch`` at zero through the engine's patched forward (fixed delta)."""
    batch = next(iter(engine.batches()))
    patch = torch.zeros(1, engine.graph.n_edges, dtype=torch.float64, requires_grad=True)
    logits = engine.run(batch, patch, fixed_delta=True, rules=rules, override=override)
    (grad,) = torch.autograd.grad(engine.metric_of(batch, logits).sum(), patch)
    return grad[0]


def _probed(
    engine: InterventionEngine, rules: RelevanceRules | None, override: Override | None = None
) -> torch.Tensor:
    batch = next(iter(engine.batches()))

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return engine.metric_of(batch, logits).sum()

    grads = reader_gradients(
        engine.weights, engine.graph, batch.embedded, batch.task.positions, metric, rules,
        override=override,
    )  # fmt: skip
    clean = batch.clean_outputs.permute(2, 0, 1, 3)
    if override is None:
        assert torch.allclose(grads.outputs, clean, atol=1e-12, rtol=0)
    delta = (batch.ablated - batch.clean_outputs).permute(2, 0, 1, 3)  # the clean run's
    return grads.edge_scores(engine.graph, delta)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize(
    ("ablation", "metric"),
    [("resample", "logit_diff"), ("zero", "prob"), ("mean", "logit_diff"), ("resample", "kl")],
)
def test_probed_gradients_equal_the_patch_gradient(name: str, ablation: str, metric: str) -> None:
    engine = _engine(name, ablation, metric)
    expected = _patch_gradient(engine, None)
    got = _probed(engine, None)
    if metric == "kl":  # at the clean run KL is at its minimum: both paths must say 0
        assert expected.abs().max() < 1e-8
    else:
        assert expected.abs().max() > 1e-5
    assert torch.allclose(got, expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", ["ln_mlp", "attn_ln", "parallel"])
def test_probed_gradients_follow_the_relevance_rules(name: str) -> None:
    engine = _engine(name, "resample", "logit_diff")
    rules = RelevanceRules()
    expected = _patch_gradient(engine, rules)
    got = _probed(engine, rules)
    assert (expected - _patch_gradient(engine, None)).abs().max() > 1e-4  # the rules matter
    assert torch.allclose(got, expected, atol=1e-10, rtol=0)


def test_eap_costs_two_forwards_and_one_backward_per_batch() -> None:
    """The corrupted run and the probed clean run (the engine's check of its reconstruction
    against the bridge is not a pass of the method's)."""
    engine = _engine("ln_mlp", "resample", "logit_diff")
    task = induction_task(seq_len=6, n=6, d_vocab=40, seed=3)
    config: Any = EAPConfig(batch_size=4)  # two batches: 4 and 2 examples
    result = eap(engine.model, task, engine.graph, config)
    assert (result.n_forward, result.n_backward) == (4, 2)
    whole = eap(engine.model, task, engine.graph, EAPConfig(batch_size=6)).edge_scores
    assert torch.allclose(result.edge_scores, whole, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", ["ln_mlp", "attn_only", "bidirectional"])
def test_eap_ig_inputs_equals_the_patch_gradient_along_the_path(name: str) -> None:
    """EAP-IG's inputs variant: the mean over the interpolated inputs of the engine's patch
    gradient (fixed delta, interpolated embedding), as the variant was first computed."""
    engine = _engine(name, "resample", "logit_diff")
    batch, steps = next(iter(engine.batches())), 4
    ablated_input = batch.ablated[:, :, 0]
    expected = torch.zeros(engine.graph.n_edges, dtype=torch.float64)
    for k in range(steps):
        emb = ablated_input + (k / steps) * (batch.embedded - ablated_input)
        patch = torch.zeros(1, engine.graph.n_edges, dtype=torch.float64, requires_grad=True)
        logits = engine.run(batch, patch, fixed_delta=True, embedded=emb)
        (grad,) = torch.autograd.grad(engine.metric_of(batch, logits).sum(), patch)
        expected += grad[0] / steps
    config = EAPIGConfig(steps=steps, variant="inputs")
    got = eap_ig(engine.model, engine.task, engine.graph, config).edge_scores
    assert expected.abs().max() > 1e-3
    assert torch.allclose(got.double(), expected, atol=1e-6 * float(expected.abs().max()), rtol=0)


def _groups(engine: InterventionEngine) -> dict[str, tuple[int, int]]:
    graph = engine.graph
    heads = graph.writer_index(0, 0)
    groups = {"input": (0, 1), "heads0": (heads, heads + graph.n_heads)}
    if not graph.attn_only:
        last = graph.writer_index(graph.n_layers - 1)
        groups["last_mlp"] = (last, last + 1)
    return groups


@pytest.mark.parametrize("name", sorted(MODELS))
def test_probed_gradients_with_a_fixed_group_equal_the_patch_gradient(name: str) -> None:
    """One writer group fixed to a mix of its clean and ablated outputs: the probed run
    gives the engine's fixed-delta patch gradient under the same override (edges into the
    fixed group score 0 on both: it passes no gradient to its own inputs)."""
    engine = _engine(name, "resample", "logit_diff")
    batch = next(iter(engine.batches()))
    unfixed = _probed(engine, None)
    for lo, hi in _groups(engine).values():
        values = 0.3 * batch.clean_outputs[:, :, lo:hi] + 0.7 * batch.ablated[:, :, lo:hi]
        override = Override(lo, hi, values)
        expected = _patch_gradient(engine, None, override)
        got = _probed(engine, None, override)
        assert (expected - unfixed).abs().max() > 1e-5  # fixing the group matters
        assert torch.allclose(got, expected, atol=1e-10, rtol=0)


def test_an_override_of_part_of_a_group_is_refused() -> None:
    engine = _engine("ln_mlp", "resample", "logit_diff")
    batch = next(iter(engine.batches()))
    lo = engine.graph.writer_index(0, 0)
    override = Override(lo, lo + 1, batch.clean_outputs[:, :, lo : lo + 1])
    with pytest.raises(EngineError, match="one whole writer group"):
        _probed(engine, None, override)
