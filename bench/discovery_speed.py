"""Batched intervention engine vs plain loops of one forward per edge set.

Two baselines evaluate the same edge sets (random circuits, and ACDC-style candidates that
differ only in late edges):

1. the engine itself with one set per forward pass (isolates the gain from stacking sets);
2. TransformerLens's hooked edge ablation (``attribution_patching.faithfulness``), one hooked
   forward per edge set and prompt pair, on a GPT-2 checkpoint loaded with
   ``boot_transformers``; the metric values are compared too, an independent check that the
   engine's patching is exact.

Writes ``bench/results/discovery_speed.md``.

    python bench/discovery_speed.py [--sets 256] [--set-batch 16] [--tl-sets 16] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.tools.analysis.attribution_patching import Node, faithfulness
from transformers import GPT2Config, GPT2LMHeadModel

from circuitreg.schema.names import parse_edge, parse_node
from circuitreg.workers.engine import InterventionEngine
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.tasks.induction import induction_task

RESULTS = Path(__file__).resolve().parent / "results" / "discovery_speed.md"
MODELS: dict[str, dict[str, Any]] = {
    "toy attn-only 2L4H d64": dict(
        n_layers=2, d_model=64, n_heads=4, d_head=16, d_vocab=64, n_ctx=32,
        attn_only=True, act_fn="gelu", normalization_type=None, seed=0,
    ),
    "LN+MLP 4L4H d64": dict(
        n_layers=4, d_model=64, n_heads=4, d_head=16, d_vocab=64, n_ctx=32, d_mlp=256,
        attn_only=False, act_fn="gelu", normalization_type="LN", seed=0,
    ),
}  # fmt: skip


def acdc_style(graph: ComputationalGraph, n_sets: int) -> torch.Tensor:
    """ACDC's candidate sets: one circuit, each set removing one more edge into the last
    layer or the logits (the sets agree on everything upstream)."""
    generator = torch.Generator().manual_seed(0)
    base = torch.rand(graph.n_edges, generator=generator) < 0.3
    late = [slot for slot in graph.slots if slot.layer in (None, graph.n_layers - 1)]
    start = min(slot.edge_start for slot in late)
    masks = base.repeat(n_sets, 1)
    for i in range(n_sets):
        masks[i:, start + i % (graph.n_edges - start)] = True
    return masks


def measure(
    name: str, cfg: dict[str, Any], n_sets: int, set_batch: int, style: str
) -> dict[str, Any]:
    """Time both ways on one model; returns a table row."""
    model = TransformerBridge.boot_native(cfg)
    graph = ComputationalGraph.from_model(model)
    task = induction_task(seq_len=8, n=16, d_vocab=cfg["d_vocab"], seed=0)
    if style == "random":
        masks = torch.rand(n_sets, graph.n_edges, generator=torch.Generator().manual_seed(0)) < 0.3
    else:
        masks = acdc_style(graph, n_sets)
    batched_engine = InterventionEngine(model, graph, task, metric="kl", set_batch=set_batch)
    looped_engine = InterventionEngine(model, graph, task, metric="kl", set_batch=1)
    batched_engine.evaluate(masks[:2])  # warm-up and batch preparation, not timed
    looped_engine.evaluate(masks[:2])
    start = time.perf_counter()
    batched = batched_engine.evaluate(masks)
    t_batched = time.perf_counter() - start
    start = time.perf_counter()
    looped = looped_engine.evaluate(masks)
    t_looped = time.perf_counter() - start
    return {
        "model": name,
        "style": style,
        "edges": graph.n_edges,
        "sets": n_sets,
        "batched_s": t_batched,
        "loop_s": t_looped,
        "ratio": t_looped / t_batched,
        "max_diff": float((batched - looped).abs().max()),
    }


def tl_node(name: str, position: int, n_layers: int, receiver: str | None = None) -> Node:
    """MIB node name (and receiver) -> TransformerLens ``Node`` at one position."""
    parsed = parse_node(name)
    if name == "input":
        return Node(kind="embed", position=position)
    if name == "logits":
        return Node(kind="logits", position=position, layer=n_layers - 1)
    if parsed.head is not None:
        kind = "attn_head_out" if receiver is None else f"{receiver}_input"
        return Node(kind=kind, position=position, layer=parsed.layer, head=parsed.head)  # type: ignore[arg-type]
    return Node(
        kind="mlp_out" if receiver is None else "mlp_in", position=position, layer=parsed.layer
    )


def pair_metric(
    positions: torch.Tensor, answers: torch.Tensor, wrong: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Single-pair logit difference over the read positions (TransformerLens's metric_fn)."""

    def metric(logits: torch.Tensor) -> torch.Tensor:
        read = logits[0, positions]
        return (read.gather(-1, answers[:, None]) - read.gather(-1, wrong[:, None])).mean()

    return metric


def measure_tl(n_sets: int, set_batch: int) -> dict[str, Any]:
    """Engine (batched) vs TransformerLens hooked edge ablation on a small HF GPT-2."""
    config = GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=64, n_positions=32,
                        bos_token_id=0, eos_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as directory:
        GPT2LMHeadModel(config).save_pretrained(directory)
        model = TransformerBridge.boot_transformers(directory, device="cpu")
    model.eval()
    graph = ComputationalGraph.from_model(model)
    task = induction_task(seq_len=6, n=4, d_vocab=64, seed=0)
    keep = torch.rand(n_sets, graph.n_edges, generator=torch.Generator().manual_seed(1)) > 0.3
    engine = InterventionEngine(model, graph, task, metric="logit_diff", set_batch=set_batch)
    engine.evaluate_circuits(keep[:1])
    start = time.perf_counter()
    ours = engine.evaluate_circuits(keep)
    t_ours = time.perf_counter() - start
    n_layers, seq = graph.n_layers, task.seq_len
    start = time.perf_counter()
    theirs = torch.zeros(n_sets, dtype=torch.float64)
    for s in range(n_sets):
        circuit = []
        for name in graph.edges_from_mask(keep[s]):
            edge = parse_edge(name)
            recv = None if edge.receiver is None else edge.receiver.value
            for p in range(seq):
                circuit.append((tl_node(edge.source, p, n_layers),
                                tl_node(edge.target, p, n_layers, recv or "")))  # fmt: skip
        for i in range(task.n_examples):
            assert task.distractors is not None
            metric = pair_metric(task.positions[i], task.answers[i], task.distractors[i])
            r = faithfulness(
                model, task.clean[i : i + 1], task.corrupted[i : i + 1], metric, circuit
            )
            value = r.corrupt_metric + r.recovered * (r.full_metric - r.corrupt_metric)
            theirs[s] += value / task.n_examples
    t_theirs = time.perf_counter() - start
    return {
        "model": "HF GPT-2 2L4H d64 (boot_transformers)",
        "edges": graph.n_edges,
        "sets": n_sets,
        "batched_s": t_ours,
        "loop_s": t_theirs,
        "ratio": t_theirs / t_ours,
        "max_diff": float((ours - theirs).abs().max()),
    }


def main() -> None:
    """Run the benchmark and write the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sets", type=int, default=256)
    parser.add_argument("--set-batch", type=int, default=16)
    parser.add_argument("--tl-sets", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [
        measure(name, cfg, args.sets, args.set_batch, style)
        for name, cfg in MODELS.items()
        for style in ("random", "acdc")
    ]
    tl_row = measure_tl(args.tl_sets, args.set_batch)
    lines = [
        "# Discovery engine: batched edge-set evaluation vs one forward per set",
        "",
        f"{args.sets} edge sets, resample ablation, KL metric. *random*: independent sets with "
        "30% of edges patched; *acdc*: ACDC's candidates, one circuit plus one more patched "
        "edge into the last layer or the logits per set (the sets agree upstream, so the "
        "engine computes the shared layers once). "
        f"16 induction prompts of 17 tokens, {args.set_batch} sets per batched pass; "
        f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or 'cpu'}.",
        "",
        "| model | kind | edges | sets | batched (s) | loop (s) | speed-up | max |diff| |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['style']} | {r['edges']} | {r['sets']} | {r['batched_s']:.2f} | "
            f"{r['loop_s']:.2f} | {r['ratio']:.1f}x | {r['max_diff']:.1e} |"
        )
    lines += [
        "",
        "## vs TransformerLens hooked edge ablation (`faithfulness`), one forward per set and pair",
        "",
        f"{args.tl_sets} random circuits (70% of edges kept), 4 induction prompts of 12 tokens, "
        "logit difference; TransformerLens patches per position, so each circuit edge is given "
        "at every position.",
        "",
        "| model | edges | sets | engine batched (s) | TL hooked loop (s) | speed-up "
        "| max |diff| |",
        "|---|---|---|---|---|---|---|",
        f"| {tl_row['model']} | {tl_row['edges']} | {tl_row['sets']} | "
        f"{tl_row['batched_s']:.2f} | {tl_row['loop_s']:.2f} | {tl_row['ratio']:.1f}x | "
        f"{tl_row['max_diff']:.1e} |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
