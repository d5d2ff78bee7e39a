"""Positional EAP-IG, both variants: every edge scored at every token position or span.

Held four ways, each against something that does not share the positional contraction:
the position scores summed over positions are the unpositioned run's edge scores (float32,
to 1e-5 of the largest); at every position they equal the engine's own patch gradient
averaged over the path's points with the writer changes kept at that position's tokens only
(the fixed-delta forward is linear in the deltas, so masking them to a label's tokens is
that label's score, computed on a different forward); the activations variant's probed path
equals the engine's patched forward it replaced; and at one step the inputs variant takes
the gradient at the corrupted run, so it is minus TransformerLens 4's positional (denoising)
``attribution_patch``, position by position.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge

from circuitreg.workers.engine import InterventionEngine, Override, PreparedBatch
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.eap import EAPConfig, eap
from circuitreg.workers.methods.eap_ig import EAPIGConfig, _writer_groups, eap_ig
from circuitreg.workers.positions import PositionMap
from circuitreg.workers.tasks.base import TaskData
from circuitreg.workers.tasks.induction import induction_task

from .test_engine_reference import MODELS
from .test_methods_eap_positions import tiny_hf_gpt2, transformer_lens_positional, with_spans

pytestmark = pytest.mark.usefixtures("one_thread")

VARIANTS = ("inputs", "activations")


def _model(name: str, dtype: torch.dtype = torch.float32) -> TransformerBridge:
    model = TransformerBridge.boot_native(MODELS[name])
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():  # nonzero biases, so a lost or doubled bias shows
        for parameter in model.parameters():
            if parameter.ndim == 1:
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    return model.to(dtype)


def _task(n: int = 4) -> TaskData:
    return with_spans(induction_task(seq_len=6, n=n, d_vocab=40, seed=3))


def _points(
    batch: PreparedBatch, variant: str, steps: int, graph: ComputationalGraph
) -> Iterator[tuple[torch.Tensor, Override | None]]:
    """The path's points as the EAP-IG papers define them (written out again here)."""
    ablated = batch.ablated.expand_as(batch.clean_outputs)
    if variant == "inputs":
        for k in range(steps):
            yield ablated[:, :, 0] + (k / steps) * (batch.embedded - ablated[:, :, 0]), None
        return
    for lo, hi in _writer_groups(graph):
        for k in range(1, steps + 1):
            a = k / steps
            values = a * batch.clean_outputs[:, :, lo:hi] + (1 - a) * ablated[:, :, lo:hi]
            yield batch.embedded, Override(lo, hi, values)


def _patch_gradient_oracle(
    engine: InterventionEngine, variant: str, steps: int, masks: torch.Tensor | None = None
) -> torch.Tensor:
    """The engine's fixed-delta patch gradient averaged over the points: ``[n_edges]``, or
    with ``masks`` ``[N, T, Q]`` the same with each batch's writer changes kept at label
    ``q``'s tokens only, ``[n_edges, Q]``."""
    graph = engine.graph
    n_points = steps * (len(_writer_groups(graph)) if variant == "activations" else 1)
    labels = 1 if masks is None else masks.shape[2]
    out = torch.zeros(graph.n_edges, labels, dtype=torch.float64)
    start = 0
    for batch in engine.batches():
        n = batch.task.n_examples
        for q in range(labels):
            kept = batch
            if masks is not None:
                keep = masks[start : start + n, :, q, None, None].to(batch.clean_outputs.dtype)
                changed = batch.clean_outputs + keep * (batch.ablated - batch.clean_outputs)
                kept = replace(batch, ablated=changed)
            for embedded, override in _points(batch, variant, steps, graph):
                patch = torch.zeros(1, graph.n_edges, dtype=embedded.dtype, requires_grad=True)
                logits = engine.run(
                    kept, patch, fixed_delta=True, embedded=embedded, override=override
                )
                (grad,) = torch.autograd.grad(engine.metric_of(kept, logits).sum(), patch)
                out[:, q] += grad[0].double() / n_points
        start += n
    return out if masks is not None else out[:, 0]


def _close(got: torch.Tensor, expected: torch.Tensor, tolerance: float) -> None:
    scale = float(expected.abs().max())
    assert scale > 0
    assert float((got.double() - expected.double()).abs().max()) <= tolerance * scale


@pytest.mark.parametrize("name", ["ln_mlp", "attn_only", "bidirectional"])
def test_the_activations_variant_equals_the_engine_patch_gradient(name: str) -> None:
    """Each group fixed in turn on the probed run (float64) is the engine's patched forward
    with the same override, as the variant was first computed, in two batches."""
    model, task = _model(name, torch.float64), _task(5)
    graph = ComputationalGraph.from_model(model)
    config = EAPIGConfig(steps=3, variant="activations", batch_size=3)
    got = eap_ig(model, task, graph, config)
    engine = InterventionEngine(model, graph, task, batch_size=3)
    _close(got.edge_scores, _patch_gradient_oracle(engine, "activations", 3), 1e-6)
    assert got.n_backward == 2 * len(_writer_groups(graph)) * 3


@pytest.mark.parametrize("name", ["ln_mlp", "attn_only", "tracr_like"])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mode", ["index", "spans"])
def test_positional_eap_ig_sums_to_the_unpositioned_run(name: str, variant: str, mode: str) -> None:
    model, task = _model(name), _task()
    graph = ComputationalGraph.from_model(model)
    config = EAPIGConfig(steps=2, variant=variant, batch_size=3)
    plain = eap_ig(model, task, graph, config)
    positional = eap_ig(model, task, graph, config.replaced(positions=mode))
    assert plain.position_scores is None and plain.positions is None
    assert positional.positions == PositionMap.for_task(task, mode)
    scores = positional.position_scores
    assert scores is not None and scores.shape == (graph.n_edges, positional.positions.size)
    _close(scores.sum(-1), plain.edge_scores, 1e-5)
    assert torch.allclose(positional.edge_scores, scores.sum(-1))
    assert (positional.n_forward, positional.n_backward) == (plain.n_forward, plain.n_backward)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("mode", ["index", "spans"])
def test_each_position_is_the_patch_gradient_of_its_tokens_changes(variant: str, mode: str) -> None:
    """Per label, the engine's patch gradient with the writer changes kept at that label's
    tokens only (spans at different tokens in different prompts), float64, two batches."""
    model, task = _model("ln_mlp", torch.float64), _task(5)
    graph = ComputationalGraph.from_model(model)
    config = EAPIGConfig(steps=2, variant=variant, batch_size=3, positions=mode)
    got = eap_ig(model, task, graph, config)
    masks = PositionMap.for_task(task, mode).one_hot(task)
    engine = InterventionEngine(model, graph, task, batch_size=3)
    expected = _patch_gradient_oracle(engine, variant, 2, masks)
    assert got.position_scores is not None
    _close(got.position_scores, expected, 1e-6)
    assert float(expected[:, :-1].abs().max()) > 0.01 * float(expected.abs().max())


@pytest.mark.parametrize("mode", ["index", "spans"])
def test_activations_at_one_step_score_the_logits_edges_as_eap(mode: str) -> None:
    """At alpha = 1 every point runs the clean model and the logits input is never fixed, so
    the positional edges into the logits are EAP's, position by position."""
    model, task = _model("ln_mlp"), _task()
    graph = ComputationalGraph.from_model(model)
    ig = eap_ig(model, task, graph, EAPIGConfig(steps=1, variant="activations", positions=mode))
    plain = eap(model, task, graph, EAPConfig(positions=mode))
    assert ig.position_scores is not None and plain.position_scores is not None
    logits = graph.slots[-1]
    into = slice(logits.edge_start, logits.edge_stop)
    _close(ig.position_scores[into], plain.position_scores[into], 1e-5)
    assert not torch.allclose(ig.position_scores, plain.position_scores, atol=1e-6)


def test_inputs_at_one_step_are_minus_transformer_lens_attribution_patch(tmp_path: Path) -> None:
    """One step of the inputs variant is the gradient at the corrupted input (the corrupted
    run) times ``corrupted - clean``: minus TransformerLens's denoising positional edge
    attribution, one pair at a time and averaged, on a tiny GPT-2 from Hugging Face files."""
    model: Any = tiny_hf_gpt2(tmp_path)
    task = induction_task(seq_len=4, n=3, d_vocab=40, seed=1)
    graph = ComputationalGraph.from_model(model, positions=task.clean.shape[1])
    ours = eap_ig(model, task, graph, EAPIGConfig(steps=1, positions="index"))
    theirs = transformer_lens_positional(model, task, graph)
    assert ours.position_scores is not None
    _close(ours.position_scores, -theirs, 1e-4)
