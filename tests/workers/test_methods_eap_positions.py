"""Positional EAP and RelP: every edge scored at every token position or span (issue 18,
items 1, 3).

Held four ways: the positional graph's size and indexing (GPT-2 small at 16 positions has
32,491 x 16 = 519,856 positional edges, counted without a model); the positional scores, by
token index or by span, summed over positions equal the unpositioned run's edge scores (the
contraction in float64 to 1e-10, the methods in float32 to 1e-5 of the largest score, on the
engine tests' tiny models); a span's score is, prompt by prompt, the sum of that prompt's own
index-mode scores at the tokens of its span, on spans that sit at different tokens in
different prompts (the oracle runs one prompt at a time); and on a tiny GPT-2 the index
scores equal TransformerLens 4's own positional ``attribution_patch``, edge by edge and
position by position, which shares no code with the engine.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge

from circuitreg.schema.names import edge_name, head_name, mlp_name
from circuitreg.workers.engine import InterventionEngine
from circuitreg.workers.engine.gradients import reader_gradients
from circuitreg.workers.graph import ComputationalGraph, GraphError
from circuitreg.workers.methods.base import ConfigError
from circuitreg.workers.methods.eap import EAPConfig, eap
from circuitreg.workers.methods.relp import RelPConfig, relp
from circuitreg.workers.positions import OTHER_SPAN, PositionMap, TokenSpans
from circuitreg.workers.tasks.base import TaskData
from circuitreg.workers.tasks.induction import induction_task

from .test_engine_reference import MODELS

pytestmark = pytest.mark.usefixtures("one_thread")


def _task() -> Any:
    return induction_task(seq_len=6, n=4, d_vocab=40, seed=3)


def with_spans(task: TaskData) -> TaskData:
    """``task`` with two named spans that sit at different tokens in different prompts:
    ``A`` at token ``n % 3`` of prompt ``n`` (and the next one too in even prompts), ``B``
    at one read position, ``T/2 + n % 4``; every other token counts towards ``other``."""
    n, t = task.n_examples, task.seq_len
    index = torch.full((n, t), -1, dtype=torch.long)
    for i in range(n):
        index[i, i % 3] = 0
        if i % 2 == 0:
            index[i, i % 3 + 1] = 0
        index[i, t // 2 + i % 4] = 1
    return replace(task, spans=TokenSpans(("A", "B"), index))


def span_oracle(per_prompt: list[torch.Tensor], task: TaskData) -> torch.Tensor:
    """``[n_edges, Q]``: each prompt's own index scores ``[n_edges, T]`` (a run on that
    prompt alone) summed into its spans' labels and averaged over the prompts."""
    assert task.spans is not None
    labels = PositionMap.for_task(task, "spans").assign(task)
    q = len(task.spans.names) + 1
    out = torch.zeros(per_prompt[0].shape[0], q, dtype=torch.float64)
    for i, scores in enumerate(per_prompt):
        out.index_add_(1, labels[i], scores.double())
    return out / task.n_examples


def test_gpt2_small_at_16_positions_has_519856_positional_edges() -> None:
    cfg = SimpleNamespace(n_layers=12, n_heads=12, attn_only=False, parallel_attn_mlp=False)
    graph = ComputationalGraph.from_cfg(cfg, positions=16)
    assert graph.n_edges == 32_491
    assert graph.n_positional_edges == 519_856
    index = graph.positional_index("a3.h7->m5", 11)
    assert index == graph.edge_index("a3.h7->m5") * 16 + 11
    assert graph.positional_edge(index) == ("a3.h7->m5", 11)
    assert graph.positional_edge(graph.n_positional_edges - 1) == (graph.edges[-1], 15)
    graph.check_positional_scores(torch.zeros(graph.n_edges, 16))
    with pytest.raises(GraphError, match="ending in"):
        graph.check_positional_scores(torch.zeros(graph.n_edges, 15))
    with pytest.raises(GraphError, match="no positions"):
        _ = ComputationalGraph.from_cfg(cfg).n_positional_edges


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("ablation", ["resample", "zero"])
def test_the_positional_contraction_sums_to_the_edge_scores(name: str, ablation: str) -> None:
    """Every tiny model (the parallel graph included, read through the engine unverified), in
    float64: summed over positions, the positional contraction is ``edge_scores``."""
    model = TransformerBridge.boot_native(MODELS[name]).to(torch.float64)
    graph = ComputationalGraph.from_model(model)
    engine = InterventionEngine(model, graph, _task(), ablation, verify=name != "parallel")
    batch = next(iter(engine.batches()))

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return engine.metric_of(batch, logits).sum()

    grads = reader_gradients(engine.weights, graph, batch.embedded, batch.task.positions, metric)
    delta = grads.delta_to(batch.ablated)
    positional = grads.position_scores(graph, delta)
    summed = grads.edge_scores(graph, delta)
    assert positional.shape == (graph.n_edges, batch.task.clean.shape[1])
    assert summed.abs().max() > 1e-5
    assert torch.allclose(positional.sum(-1), summed, atol=1e-10, rtol=0)
    spanned = with_spans(batch.task)
    one_hot = PositionMap.for_task(spanned, "spans").one_hot(spanned, delta.dtype)
    by_span = grads.position_scores(graph, delta, one_hot)
    assert by_span.shape == (graph.n_edges, 3)
    assert torch.allclose(by_span.sum(-1), summed, atol=1e-10, rtol=0)
    assert float(by_span[:, :2].abs().max()) > 1e-5  # not all in "other"


@pytest.mark.parametrize("name", sorted(set(MODELS) - {"parallel"}))
@pytest.mark.parametrize("method", ["eap", "relp"])
@pytest.mark.parametrize("mode", ["index", "spans"])
def test_positional_runs_sum_to_the_unpositioned_run(name: str, method: str, mode: str) -> None:
    """EAP and RelP with ``positions`` in float32, in two batches: the position scores
    summed over positions are the unpositioned run's edge scores to 1e-5 of the largest."""
    model = TransformerBridge.boot_native(MODELS[name])
    graph, task = ComputationalGraph.from_model(model), with_spans(_task())
    run, config_cls = (eap, EAPConfig) if method == "eap" else (relp, RelPConfig)
    plain = run(model, task, graph, config_cls(batch_size=3))
    positional = run(model, task, graph, config_cls(batch_size=3, positions=mode))
    assert plain.position_scores is None and plain.positions is None
    scores = positional.position_scores
    assert positional.positions == PositionMap.for_task(task, mode)
    assert scores is not None and scores.shape == (graph.n_edges, positional.positions.size)
    scale = float(plain.edge_scores.abs().max())
    assert scale > 0
    assert float((scores.sum(-1) - plain.edge_scores).abs().max()) <= 1e-5 * scale
    assert torch.allclose(positional.edge_scores, scores.sum(-1), atol=1e-6 * scale, rtol=0)
    assert (positional.n_forward, positional.n_backward) == (plain.n_forward, plain.n_backward)


@pytest.mark.parametrize(
    ("method", "direction"), [("eap", "noising"), ("eap", "denoising"), ("relp", "noising")]
)
def test_span_scores_are_each_prompts_own_scores_at_its_spans(method: str, direction: str) -> None:
    """The spans sit at different tokens in different prompts: a span's score (the whole
    task, in batches of 3) is the sum, prompt by prompt, of that prompt's index scores (a
    run on the prompt alone) at the tokens of its span, to 1e-5 of the largest."""
    model = TransformerBridge.boot_native(MODELS["ln_mlp"])
    task = with_spans(induction_task(seq_len=6, n=5, d_vocab=40, seed=3))
    graph = ComputationalGraph.from_model(model, positions=3)
    run, config_cls = (eap, EAPConfig) if method == "eap" else (relp, RelPConfig)
    config = config_cls(batch_size=3, direction=direction)
    spans = run(model, task, graph, config.replaced(positions="spans"))
    assert spans.positions is not None
    assert spans.positions.labels == ("A", "B", OTHER_SPAN)
    assert spans.positions.indices == (None, None, None)  # no span at one shared index
    per_prompt = []
    for i in range(task.n_examples):
        alone = task.subset(slice(i, i + 1))
        index_graph = ComputationalGraph.from_model(model)
        scores = run(model, alone, index_graph, config.replaced(positions="index")).position_scores
        assert scores is not None
        per_prompt.append(scores)
    expected = span_oracle(per_prompt, task)
    assert spans.position_scores is not None
    scale = float(expected.abs().max())
    assert scale > 0 and float(expected[:, :2].abs().max()) > 0.01 * scale
    assert float((spans.position_scores.double() - expected).abs().max()) <= 1e-5 * scale


def test_span_mode_needs_a_task_with_spans() -> None:
    model = TransformerBridge.boot_native(MODELS["attn_only"])
    graph = ComputationalGraph.from_model(model)
    with pytest.raises(ConfigError, match="names no spans"):
        eap(model, replace(_task(), spans=None), graph, EAPConfig(positions="spans"))
    with pytest.raises(ValueError, match="positions"):
        EAPConfig.from_dict({"positions": "tokens"})


def test_logits_edges_score_only_at_the_read_positions() -> None:
    """The logits reader is read at each example's own read positions: its positional edges
    are 0 where no example reads, and not everywhere 0 where they do."""
    model = TransformerBridge.boot_native(MODELS["ln_mlp"])
    task = induction_task(seq_len=6, n=4, d_vocab=40, seed=3)
    graph = ComputationalGraph.from_model(model, positions=task.clean.shape[1])
    result = eap(model, task, graph, EAPConfig(positions="index"))
    assert result.position_scores is not None
    logits = graph.slots[-1]
    into_logits = result.position_scores[logits.edge_start : logits.edge_stop]
    read = torch.zeros(task.clean.shape[1], dtype=torch.bool)
    read[task.positions.flatten()] = True
    assert not read.all()
    assert float(into_logits[:, ~read].abs().max()) == 0.0
    assert float(into_logits[:, read].abs().max()) > 0.0


def test_a_graph_of_another_length_is_refused() -> None:
    model = TransformerBridge.boot_native(MODELS["attn_only"])
    task = with_spans(_task())
    graph = ComputationalGraph.from_model(model, positions=task.clean.shape[1] + 1)
    with pytest.raises(ConfigError, match="13 positions but index positions"):
        eap(model, task, graph, EAPConfig(positions="index"))
    graph = ComputationalGraph.from_model(model, positions=task.clean.shape[1])
    with pytest.raises(ConfigError, match=r"12 positions but spans positions .* are 3"):
        eap(model, task, graph, EAPConfig(positions="spans"))


def _tl_key(graph: ComputationalGraph, writer: Any, reader: Any) -> tuple[int, int]:
    """TransformerLens's positional (writer, reader) -> (our edge index, position)."""

    def node(n: Any) -> str:
        if n.kind == "embed":
            return "input"
        if n.kind == "attn_head_out":
            return head_name(int(n.layer), int(n.head))
        return mlp_name(int(n.layer))

    assert writer.position == reader.position  # same-position edges only
    if reader.kind in ("q_input", "k_input", "v_input"):
        target = head_name(int(reader.layer), int(reader.head))
        name = edge_name(node(writer), target, reader.kind[0])
    else:
        name = edge_name(node(writer), "logits" if reader.kind == "logits" else node(reader))
    return graph.edge_index(name), int(reader.position)


def test_positional_eap_equals_transformer_lens_attribution_patch(tmp_path: Path) -> None:
    """A tiny GPT-2 booted from Hugging Face files: TransformerLens's positional edge
    attribution, one pair at a time and averaged, is our denoising positional EAP."""
    model = tiny_hf_gpt2(tmp_path)
    task = induction_task(seq_len=4, n=3, d_vocab=40, seed=1)
    graph = ComputationalGraph.from_model(model, positions=task.clean.shape[1])
    ours = eap(model, task, graph, EAPConfig(direction="denoising", positions="index"))
    theirs = transformer_lens_positional(model, task, graph)
    assert ours.position_scores is not None
    scale = float(theirs.abs().max())
    assert scale > 0
    assert float((ours.position_scores.double() - theirs).abs().max()) <= 1e-4 * scale


def tiny_hf_gpt2(directory: Path) -> TransformerBridge:
    """A 2-layer GPT-2 saved as Hugging Face files and booted with TransformerLens's own
    loader (its edge attribution needs the per-head result hooks)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=40, n_positions=16)
    GPT2LMHeadModel(config).save_pretrained(directory)
    model = TransformerBridge.boot_transformers(str(directory), device="cpu")
    model.eval()
    return model


def transformer_lens_positional(
    model: TransformerBridge, task: TaskData, graph: ComputationalGraph
) -> torch.Tensor:
    """TransformerLens 4's positional edge ``attribution_patch``, one pair at a time and
    averaged, as ``[n_edges, T]`` in our edge order (denoising: gradients at the corrupted
    run, times clean minus corrupted)."""
    from transformer_lens.tools.analysis.attribution_patching import (
        EdgeAttributionConfig,
        attribution_patch,
    )

    theirs = torch.zeros(graph.n_edges, task.clean.shape[1], dtype=torch.float64)
    for i in range(task.n_examples):
        read, answer, wrong = task.positions[i], task.answers[i], task.distractors[i]

        def metric(logits: torch.Tensor) -> torch.Tensor:
            at = logits[0, read]  # noqa: B023 - used within this iteration
            return (at.gather(-1, answer[:, None]) - at.gather(-1, wrong[:, None])).mean()  # noqa: B023

        result = attribution_patch(
            model, task.clean[i : i + 1], task.corrupted[i : i + 1], metric,
            EdgeAttributionConfig(granularity="edge"),
        )  # fmt: skip
        for (writer, reader), score in result.edge_scores.items():
            theirs[_tl_key(graph, writer, reader)] += score / task.n_examples
    return theirs
