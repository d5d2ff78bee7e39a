"""The engine patches positional edges: per position label, exactly, many sets per pass.

Held three ways: a positional patch with the same coefficient at every position is the
unpositioned patch of the fast stream (logits to 1e-10 in float64, metrics to 1e-5 in
float32, gradients summed over positions too), on tiny random models of every shape the
engine supports (no norm, LayerNorm and MLPs, MLPs and no norm, attention-only with a norm,
bidirectional, a parallel-block graph); the hook-based patcher, which shares no forward code
with the engine, scores random positional sets as the engine does, by index and by spans
that sit at different tokens in different prompts; and what causality forbids (a patch
after the last read token changes nothing) and requires (every edge patched everywhere is
the ablated model) holds. Bad patches are refused with the reason.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge

from circuitreg.workers.engine import EngineError, HookedEdgePatcher, InterventionEngine
from circuitreg.workers.engine.relevance import RelevanceRules
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.positions import PositionMap, TokenSpans
from circuitreg.workers.tasks.base import TaskData
from circuitreg.workers.tasks.induction import induction_task

from .tiny_bridges import ATTN_ONLY, WITH_MLP

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS: dict[str, dict[str, Any]] = {
    "attn_only": ATTN_ONLY,
    "ln_mlp": dict(WITH_MLP, n_layers=3),
    "tracr_like": dict(WITH_MLP, normalization_type=None),
    "attn_ln": dict(ATTN_ONLY, normalization_type="LN"),
    "bidirectional": dict(WITH_MLP, attention_dir="bidirectional"),
    # the native bridge computes its blocks in sequence: the engine reads the graph's parallel
    # reading unverified, and both of its forwards are compared on it
    "parallel": dict(WITH_MLP, parallel_attn_mlp=True),
}


def _model(name: str, dtype: torch.dtype = torch.float32) -> Any:
    model = TransformerBridge.boot_native(MODELS[name])
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():  # a native bridge starts with zero biases, which hides a lost bias
        for parameter in model.parameters():
            if parameter.ndim == 1:
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    return model.to(dtype)


def _task() -> TaskData:
    return induction_task(seq_len=5, n=6, d_vocab=40, seed=3)


def with_spans(task: TaskData) -> TaskData:
    """Spans at different tokens in different prompts: ``X`` at token ``1 + n % 3`` of
    prompt ``n`` (two tokens in odd prompts), ``Y`` at read position ``T/2 + n % 4``."""
    n, t = task.n_examples, task.seq_len
    index = torch.full((n, t), -1, dtype=torch.long)
    for i in range(n):
        index[i, 1 + i % 3] = 0
        if i % 2:
            index[i, 2 + i % 3] = 0
        index[i, t // 2 + i % 4] = 1
    return replace(task, spans=TokenSpans(("X", "Y"), index))


def _engine(
    name: str, task: TaskData, mode: str, dtype: torch.dtype = torch.float32, **kw: Any
) -> InterventionEngine:
    model = _model(name, dtype)
    graph = ComputationalGraph.from_model(model)
    positions = PositionMap.for_task(task, mode)
    return InterventionEngine(
        model, graph, task, positions=positions, verify=name != "parallel", **kw
    )


def _uniform(patch: torch.Tensor, q: int) -> torch.Tensor:
    """Each edge's coefficient at every one of ``q`` positions, flattened edge-major."""
    return patch[..., None].expand(*patch.shape, q).flatten(-2)


def _random_rows(n_sets: int, width: int, seed: int, fractional: bool) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    rows = torch.rand(n_sets, width, generator=generator, dtype=torch.float64)
    return rows if fractional else (rows < 0.3).double()


@pytest.mark.parametrize("mode", ["index", "spans"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_uniform_positional_patch_is_the_unpositioned_patch(name: str, mode: str) -> None:
    task = with_spans(_task())
    engine = _engine(name, task, mode, torch.float64)
    q = engine.positions.size if engine.positions else 0
    batch = next(engine.batches())
    with torch.no_grad():
        for fractional in (False, True):
            patch = _random_rows(5, engine.graph.n_edges, seed=len(name), fractional=fractional)
            fast = engine.run(batch, patch)
            positional = engine.run(batch, _uniform(patch, q))
            assert (fast - positional).abs().max() < 1e-10
            assert float((fast[0] - fast[1]).abs().max()) > 1e-3, "the sets must differ"
        delta_fast = engine.run(batch, patch, fixed_delta=True)
        delta_positional = engine.run(batch, _uniform(patch, q), fixed_delta=True)
    assert (delta_fast - delta_positional).abs().max() < 1e-10


@pytest.mark.parametrize("ablation", ["resample", "zero", "mean"])
@pytest.mark.parametrize("name", ["attn_only", "ln_mlp", "parallel"])
def test_uniform_positional_metrics_equal_the_fast_engine(name: str, ablation: str) -> None:
    """float32, several batches and several passes per batch (``set_batch=3``)."""
    task = _task()
    engine = _engine(name, task, "index", ablation=ablation, batch_size=4, set_batch=3)
    patch = _random_rows(7, engine.graph.n_edges, seed=11, fractional=True).float()
    q = task.seq_len
    fast, positional = engine.evaluate(patch), engine.evaluate(_uniform(patch, q))
    assert (fast - positional).abs().max() < 1e-5
    keep = patch < 0.5
    circuits = engine.evaluate_circuits(_uniform(keep, q))
    assert (circuits - engine.evaluate_circuits(keep)).abs().max() < 1e-5
    per_example = engine.evaluate_per_example(_uniform(patch, q))
    assert per_example.shape == (7, task.n_examples)
    assert (per_example - engine.evaluate_per_example(patch)).abs().max() < 1e-5


@pytest.mark.parametrize("fixed_delta", [False, True])
@pytest.mark.parametrize("name", ["attn_only", "ln_mlp"])
def test_positional_gradients_sum_to_the_unpositioned_gradient(
    name: str, fixed_delta: bool
) -> None:
    """d metric / d p[e] of a uniform patch is the sum over positions of the positional
    gradient (what mask pruning and EAP read off the patch)."""
    task = with_spans(_task())
    engine = _engine(name, task, "spans", torch.float64)
    q = engine.positions.size if engine.positions else 0
    batch = next(engine.batches())
    base = _random_rows(2, engine.graph.n_edges, seed=3, fractional=True) * 0.5
    plain = base.clone().requires_grad_(True)
    engine.metric_of(batch, engine.run(batch, plain, fixed_delta=fixed_delta)).sum().backward()
    positional = _uniform(base, q).clone().requires_grad_(True)
    logits = engine.run(batch, positional, fixed_delta=fixed_delta)
    engine.metric_of(batch, logits).sum().backward()
    assert plain.grad is not None and positional.grad is not None
    summed = positional.grad.view(2, engine.graph.n_edges, q).sum(-1)
    assert (summed - plain.grad).abs().max() < 1e-10
    assert float(plain.grad.abs().max()) > 1e-4


def _positional_sets(n_edges: int, q: int, n_sets: int, seed: int) -> torch.Tensor:
    """Random 0/1 positional sets, each with a few whole positions and scattered edges."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.rand(n_sets, n_edges, q, generator=generator) < 0.15
    for s in range(n_sets):
        rows[s, :, s % q] |= torch.rand(n_edges, generator=generator) < 0.5
    return rows.flatten(1).float()


@pytest.mark.parametrize("ablation", ["resample", "zero", "mean"])
@pytest.mark.parametrize("mode", ["index", "spans"])
@pytest.mark.parametrize("name", ["attn_only", "ln_mlp"])
def test_engine_equals_hooked_patcher_on_positional_sets(
    name: str, mode: str, ablation: str
) -> None:
    task = with_spans(_task())
    engine = _engine(name, task, mode, ablation=ablation, set_batch=4)
    assert engine.positions is not None
    hooked = HookedEdgePatcher(
        engine.model, engine.graph, task, ablation=ablation, positions=engine.positions
    )
    sets = _positional_sets(engine.graph.n_edges, engine.positions.size, 6, seed=len(mode))
    ours, theirs = engine.evaluate(sets), hooked.evaluate(sets)
    assert (ours - theirs).abs().max() < 1e-4
    assert float(theirs.max() - theirs.min()) > 1e-3, "the sets must differ for this to test"
    # and the positional sets are not their unpositioned sums: the positions matter
    summed = sets.view(6, engine.graph.n_edges, -1).amax(-1)
    assert (engine.evaluate(summed) - ours).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["attn_only", "ln_mlp"])
def test_patching_after_the_last_read_token_changes_nothing(name: str) -> None:
    """Causal attention: the tokens after the last read position reach no read logit."""
    task = _task()
    engine = _engine(name, task, "index")
    q, e = task.seq_len, engine.graph.n_edges
    last_read = int(task.positions.max())
    assert last_read < q - 1
    late = torch.zeros(e, q)
    late[:, last_read + 1 :] = 1.0
    at_read = torch.zeros(e, q)
    at_read[:, last_read] = 1.0
    clean, late_value, read_value = engine.evaluate(
        torch.stack([torch.zeros(e * q), late.flatten(), at_read.flatten()])
    ).tolist()
    assert abs(late_value - clean) < 1e-6
    assert abs(read_value - clean) > 1e-3
    everything = engine.evaluate(torch.ones(1, e * q))
    assert abs(float(everything[0]) - engine.ablated_metric()) < 1e-5


def test_bad_positional_patches_are_refused() -> None:
    task = with_spans(_task())
    engine = _engine("attn_only", task, "spans")
    e, q = engine.graph.n_edges, 3
    assert engine.patch_width == e * q
    with pytest.raises(EngineError, match=rf"{e} edges or {e * q} positional edges"):
        engine.evaluate(torch.zeros(1, e * q + 1))
    plain = InterventionEngine(engine.model, engine.graph, task)
    with pytest.raises(EngineError, match="positions=PositionMap"):
        plain.evaluate(torch.zeros(1, e * q))
    batch = next(engine.batches())
    with pytest.raises(EngineError, match="no override or relevance rules"):
        engine.run(batch, torch.zeros(1, e * q), rules=RelevanceRules())
    hooked = HookedEdgePatcher(engine.model, engine.graph, task, positions=engine.positions)
    with pytest.raises(EngineError, match=rf"{e * q} positional edges"):
        hooked.evaluate(torch.zeros(1, e * 2))


def test_a_map_that_does_not_fit_is_refused() -> None:
    task = with_spans(_task())
    model = _model("attn_only")
    graph = ComputationalGraph.from_model(model)
    spans = PositionMap.for_task(task, "spans")
    with pytest.raises(EngineError, match="does not fit the task"):
        InterventionEngine(model, graph, replace(task, spans=None), positions=spans)
    index = PositionMap.for_task(task, "index")
    with pytest.raises(EngineError, match="does not fit the task"):
        InterventionEngine(model, graph, induction_task(seq_len=4, n=3, d_vocab=40),
                           positions=index)  # fmt: skip
    with pytest.raises(EngineError, match="graph has 4 positions"):
        InterventionEngine(model, replace(graph, positions=4), task, positions=spans)
