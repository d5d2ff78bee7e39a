"""The intervention engine is exact: it reproduces the bridge, and patches like naive hooks."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge

from circuitreg.workers.engine import EngineError, InterventionEngine
from circuitreg.workers.engine import engine as engine_module
from circuitreg.workers.engine.forward import run_forward
from circuitreg.workers.engine.reference import reference_forward
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.tasks.base import TaskData
from circuitreg.workers.tasks.induction import induction_task

from .tiny_bridges import ATTN_ONLY, WITH_MLP

pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(cfg: dict[str, Any], n: int = 6) -> tuple[Any, ComputationalGraph, TaskData]:
    model = TransformerBridge.boot_native(cfg)
    graph = ComputationalGraph.from_model(model)
    return model, graph, induction_task(seq_len=5, n=n, d_vocab=40, seed=3)


def _all_positions(task: TaskData) -> TaskData:
    n, t = task.clean.shape
    positions = torch.arange(t).expand(n, t).clone()
    return TaskData(
        "all", {}, task.clean, task.corrupted, positions, task.clean, task.clean, "test"
    )


@pytest.mark.parametrize("cfg", [ATTN_ONLY, WITH_MLP], ids=["attn_only", "ln_mlp"])
def test_unpatched_and_fully_patched_runs_equal_the_bridge(cfg: dict[str, Any]) -> None:
    model, graph, task = _setup(cfg)
    engine = InterventionEngine(model, graph, _all_positions(task))
    assert engine.verify() < 1e-4
    batch = next(engine.batches())
    with torch.no_grad():
        clean = engine.run(batch, torch.zeros(1, graph.n_edges))[0]
        patched = engine.run(batch, torch.ones(1, graph.n_edges))[0]
        assert (clean - model(task.clean)).abs().max() < 1e-4
        assert (patched - model(task.corrupted)).abs().max() < 1e-4


def _writer_output(cache: Any, writer: str, model: Any) -> torch.Tensor:
    """A writer's residual contribution read from the bridge's own hooks."""
    if writer == "input":
        return cache["hook_embed"] + cache["hook_pos_embed"]
    if writer.startswith("m"):
        return cache[f"blocks.{writer[1:]}.hook_mlp_out"]
    layer, head = (int(x) for x in writer[1:].split(".h"))
    z = cache[f"blocks.{layer}.attn.hook_z"][:, :, head]
    return z @ model.W_O[layer, head]


def _naive_one_edge(model: Any, task: TaskData, edge: str) -> torch.Tensor:
    """Patch one edge with plain bridge hooks: add (corrupted - clean) source output to the
    target's input (exact for a single edge: nothing upstream of the target changes)."""
    source, rest = edge.split("->")
    _, clean_cache = model.run_with_cache(task.clean)
    _, corrupt_cache = model.run_with_cache(task.corrupted)
    delta = _writer_output(corrupt_cache, source, model) - _writer_output(
        clean_cache, source, model
    )
    if "<" in rest:  # head input; the attention-only model has no norm, so q = x W_Q + b_Q
        target, recv = rest[:-3], rest[-2]
        layer, head = (int(x) for x in target[1:].split(".h"))
        weight = getattr(model, f"W_{recv.upper()}")[layer, head]
        hook_name = f"blocks.{layer}.attn.hook_{recv}"

        def hook(value: torch.Tensor, hook: Any) -> torch.Tensor:
            value = value.clone()
            value[:, :, head] += delta @ weight
            return value

    else:
        hook_name = "ln_final.hook_in" if rest == "logits" else f"blocks.{rest[1:]}.ln2.hook_in"

        def hook(value: torch.Tensor, hook: Any) -> torch.Tensor:
            return value + delta

    with torch.no_grad():
        return model.run_with_hooks(task.clean, fwd_hooks=[(hook_name, hook)])


@pytest.mark.parametrize(
    ("cfg", "edges"),
    [
        (ATTN_ONLY, ["input->a0.h1<q>", "a0.h2->a1.h3<k>", "a0.h0->a1.h1<v>", "a0.h3->logits"]),
        (WITH_MLP, ["a0.h1->m0", "input->m1", "m0->m1", "a1.h2->logits", "m1->logits"]),
    ],
    ids=["heads", "mlps"],
)
def test_patching_one_edge_equals_a_naive_hook(cfg: dict[str, Any], edges: list[str]) -> None:
    model, graph, task = _setup(cfg)
    engine = InterventionEngine(model, graph, _all_positions(task))
    batch = next(engine.batches())
    patch = torch.stack([graph.mask_from_edges([e]).float() for e in edges])
    with torch.no_grad():
        ours = engine.run(batch, patch)  # all edge sets in one batched pass
    for i, edge in enumerate(edges):
        naive = _naive_one_edge(model, task, edge)
        assert (ours[i] - naive).abs().max() < 1e-4, edge
        assert (naive - model(task.clean)).abs().max() > 1e-4, f"{edge} has no effect to test"


def test_batched_sets_equal_one_set_at_a_time() -> None:
    model, graph, task = _setup(WITH_MLP, n=5)
    engine = InterventionEngine(model, graph, task, metric="kl", batch_size=2, set_batch=3)
    generator = torch.Generator().manual_seed(0)
    masks = torch.rand(7, graph.n_edges, generator=generator) < 0.3
    # The second group of sets agrees on every edge into layer 0 and the layer-1 heads, so
    # the engine computes that prefix once and widens to all sets at the layer-1 MLP.
    late = graph.edge_index("input->m1")
    masks[4:, :late] = masks[3, :late]
    batched = engine.evaluate(masks)
    single = torch.cat([engine.evaluate(m.unsqueeze(0)) for m in masks])
    assert torch.allclose(batched, single, atol=1e-6)
    assert torch.allclose(engine.evaluate(masks[3:]), single[3:], atol=1e-6)
    assert engine.evaluate(torch.zeros(1, graph.n_edges))[0] == pytest.approx(0.0, abs=1e-6)


def test_zero_ablation_of_every_edge_leaves_only_the_biases() -> None:
    model, graph, task = _setup(ATTN_ONLY)
    engine = InterventionEngine(model, graph, task, ablation="zero")
    batch = next(engine.batches())
    with torch.no_grad():
        logits = engine.run(batch, torch.ones(1, graph.n_edges))[0]
    resid = model.b_O.sum(0)  # the attention output biases belong to no node
    expected = model.ln_final(resid) @ model.W_U + model.b_U
    assert torch.allclose(logits, expected.expand_as(logits), atol=1e-5)


def test_mean_ablation_patches_the_token_wise_dataset_mean() -> None:
    model, graph, task = _setup(WITH_MLP, n=4)
    engine = InterventionEngine(model, graph, task, ablation="mean", batch_size=3)
    batches = list(engine.batches())
    outputs = torch.cat([b.clean_outputs for b in batches])
    assert batches[0].ablated.shape[0] == 1
    assert torch.allclose(batches[0].ablated[0], outputs.mean(0), atol=1e-6)


def test_nodes_patch_like_all_their_outgoing_edges() -> None:
    model, graph, task = _setup(WITH_MLP)
    engine = InterventionEngine(model, graph, task, metric="kl")
    node_mask = torch.zeros(1, graph.n_nodes, dtype=torch.bool)
    node_mask[0, graph.node_index("a0.h2")] = True
    by_node = engine.evaluate_nodes(node_mask)
    by_edges = engine.evaluate(graph.mask_from_edges(graph.edges_from_mask(
        graph.node_mask_to_edge_mask(node_mask[0])
    )).unsqueeze(0))  # fmt: skip
    assert torch.allclose(by_node, by_edges)
    assert by_node[0] > 0


def test_unsupported_architecture_and_mismatched_graph_are_refused() -> None:
    rotary = dict(ATTN_ONLY, positional_embedding_type="rotary", rotary_dim=8)
    model = TransformerBridge.boot_native(rotary)
    task = induction_task(seq_len=4, n=2, d_vocab=40)
    with pytest.raises(EngineError, match="positional_embedding_type"):
        InterventionEngine(model, ComputationalGraph.from_model(model), task)
    model = TransformerBridge.boot_native(ATTN_ONLY)
    with pytest.raises(EngineError, match="does not match"):
        InterventionEngine(model, ComputationalGraph(n_layers=3, n_heads=4), task)


def test_cpu_passes_are_capped_by_the_cache_budget_with_the_same_results(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, graph, task = _setup(WITH_MLP, n=6)
    masks = torch.rand(12, graph.n_edges, generator=torch.Generator().manual_seed(4)) < 0.3
    engine = InterventionEngine(model, graph, task, metric="kl", set_batch=12)
    per_set = task.n_examples * task.seq_len * 3 * graph.n_heads * int(model.cfg.d_model)
    monkeypatch.setattr(engine_module, "CPU_PASS_ELEMENTS", per_set * 5)
    assert engine.sets_per_pass(task.n_examples) == 5
    engine.clean_metric()  # prepares (and caches) the example batch
    before = engine.n_forward
    capped = engine.evaluate(masks)
    assert engine.n_forward - before == 3  # 12 sets in passes of 5, 5, 2
    monkeypatch.setattr(engine_module, "CPU_PASS_ELEMENTS", per_set * 100)
    assert engine.max_sets_per_pass == 12  # never more than set_batch
    before = engine.n_forward
    assert torch.allclose(engine.evaluate(masks), capped, atol=1e-6)
    assert engine.n_forward - before == 1
    monkeypatch.setattr(engine_module, "CPU_PASS_ELEMENTS", 1)
    assert engine.max_sets_per_pass == 1  # at least one set per pass


def test_cpu_passes_without_a_norm_are_budgeted_d_head_wide(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = TransformerBridge.boot_native(ATTN_ONLY)  # no norm: inputs are formed projected
    graph = ComputationalGraph.from_model(model)
    task = induction_task(seq_len=5, n=6, d_vocab=40, seed=0)
    engine = InterventionEngine(model, graph, task, set_batch=64)
    per_set = task.n_examples * task.seq_len * 3 * graph.n_heads * int(model.cfg.d_head)
    monkeypatch.setattr(engine_module, "CPU_PROJECTED_PASS_ELEMENTS", per_set * 7)
    monkeypatch.setattr(engine_module, "CPU_PASS_ELEMENTS", 1)  # not the budget used here
    assert engine.sets_per_pass(task.n_examples) == 7


def test_a_run_of_more_rows_than_a_pass_holds_is_split_with_the_same_logits_and_gradients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, graph, task = _setup(WITH_MLP, n=6)
    engine = InterventionEngine(model, graph, task, set_batch=12)
    batch = next(engine.batches())
    rows = torch.rand(7, graph.n_edges, generator=torch.Generator().manual_seed(6))

    def logits_and_grad(cap: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        monkeypatch.setattr(engine_module, "CPU_PASS_ELEMENTS", cap)
        patch = rows.clone().requires_grad_(True)
        before = engine.n_forward
        logits = engine.run(batch, patch)
        passes = engine.n_forward - before
        engine.metric_of(batch, logits).sum().backward()
        assert patch.grad is not None
        return logits.detach(), patch.grad, passes

    per_set = task.n_examples * task.seq_len * 3 * graph.n_heads * int(model.cfg.d_model)
    split_logits, split_grad, split_passes = logits_and_grad(per_set * 3)
    whole_logits, whole_grad, whole_passes = logits_and_grad(per_set * 100)
    assert (split_passes, whole_passes) == (3, 1)  # 7 rows in passes of 3, 3, 1
    assert split_logits.shape == whole_logits.shape == (7, *whole_logits.shape[1:])
    assert (split_logits - whole_logits).abs().max() < 1e-5
    assert whole_grad.abs().max() > 1e-4
    assert (split_grad - whole_grad).abs().max() < 1e-5


@pytest.mark.parametrize("cfg", [ATTN_ONLY, WITH_MLP], ids=["attn_only", "ln_mlp"])
def test_last_layer_at_the_read_positions_equals_the_full_pass(cfg: dict[str, Any]) -> None:
    """The induction task reads half the positions, so the engine runs the last layer there
    only; the same patches on a pass over every position, then read, must agree, and so must
    the attribution gradients that flow through the narrowed layer."""
    model, graph, task = _setup(cfg)
    assert task.positions.shape[1] < task.seq_len  # the narrowed path is the one tested
    engine = InterventionEngine(model, graph, task)
    batch = next(engine.batches())
    rows = torch.arange(task.n_examples)[:, None]
    patch = torch.rand(9, graph.n_edges, generator=torch.Generator().manual_seed(1)) < 0.4
    patch = patch.float()
    patch[0, graph.n_edges // 2 :] = 0.0  # sets that agree early, as ACDC's do
    patch[1] = patch[0]
    patch[1, -1] = 1.0
    everywhere = torch.arange(task.seq_len).expand(task.n_examples, -1)

    def full(fixed: torch.Tensor) -> torch.Tensor:
        logits = run_forward(
            engine.weights, graph, batch.embedded, everywhere, patch=fixed,
            ablated=batch.ablated,
        ).logits  # fmt: skip
        return logits[:, rows, task.positions]

    with torch.no_grad():
        narrowed = engine.run(batch, patch)
        assert (narrowed - full(patch)).abs().max() < 1e-5
        reference = reference_forward(
            engine.weights, graph, batch.embedded, task.positions, patch=patch,
            ablated=batch.ablated,
        ).logits  # fmt: skip
        assert (narrowed - reference).abs().max() < 1e-5
    narrow_in = patch.clone().mul(0.5).requires_grad_(True)
    full_in = patch.clone().mul(0.5).requires_grad_(True)
    engine.metric_of(batch, engine.run(batch, narrow_in)).sum().backward()
    engine.metric_of(batch, full(full_in)).sum().backward()
    assert narrow_in.grad is not None and full_in.grad is not None
    assert narrow_in.grad.abs().max() > 1e-4
    assert (narrow_in.grad - full_in.grad).abs().max() < 1e-5
