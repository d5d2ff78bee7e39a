"""Batched EAP vs TransformerLens's per-example edge ``attribution_patch``, same prompts.

Saves a small randomly initialised GPT-2 (Hugging Face format) locally, loads it with
``TransformerBridge.boot_transformers`` (TransformerLens's edge attribution needs its per-head
result hooks), and scores every edge on ``--pairs`` induction prompt pairs both ways:
TransformerLens one pair at a time, and ``circuitreg``'s EAP in batches, in TransformerLens's
denoising direction so the numbers are the same quantity. TransformerLens keys scores per
position; they are summed over positions onto the MIB edge names. Reports both times, the
speed-up and the largest score difference. Writes ``bench/results/eap_vs_transformerlens.md``.

    python bench/eap_vs_transformerlens.py [--pairs 256] [--layers 4] [--heads 4] [--d-model 128]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.tools.analysis.attribution_patching import (
    EdgeAttributionConfig,
    Node,
    attribution_patch,
)
from transformers import GPT2Config, GPT2LMHeadModel

from circuitreg.schema.names import edge_name, head_name, mlp_name
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.eap import EAPConfig, eap
from circuitreg.workers.tasks.induction import induction_task

RESULTS = Path(__file__).resolve().parent / "results" / "eap_vs_transformerlens.md"


def writer_name(node: Node) -> str:
    """TransformerLens writer node -> MIB node name."""
    if node.kind == "embed":
        return "input"
    if node.kind == "attn_head_out":
        return head_name(int(node.layer or 0), int(node.head or 0))
    return mlp_name(int(node.layer or 0))


def edge_key(writer: Node, reader: Node) -> str:
    """TransformerLens (writer, reader) -> MIB edge name."""
    if reader.kind in ("q_input", "k_input", "v_input"):
        target = head_name(int(reader.layer or 0), int(reader.head or 0))
        return edge_name(writer_name(writer), target, reader.kind[0])
    if reader.kind == "mlp_in":
        return edge_name(writer_name(writer), mlp_name(int(reader.layer or 0)))
    return edge_name(writer_name(writer), "logits")


def pair_metric(
    positions: torch.Tensor, answers: torch.Tensor, wrong: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Single-pair logit difference over the read positions (TransformerLens's metric_fn)."""

    def metric(logits: torch.Tensor) -> torch.Tensor:
        read = logits[0, positions]
        return (read.gather(-1, answers[:, None]) - read.gather(-1, wrong[:, None])).mean()

    return metric


def tl_scores(model: Any, task: Any, graph: ComputationalGraph) -> torch.Tensor:
    """TransformerLens edge attribution, one pair at a time, summed over positions."""
    scores = torch.zeros(graph.n_edges, dtype=torch.float64)
    for i in range(task.n_examples):
        metric = pair_metric(task.positions[i], task.answers[i], task.distractors[i])
        result = attribution_patch(
            model,
            task.clean[i : i + 1],
            task.corrupted[i : i + 1],
            metric,
            EdgeAttributionConfig(granularity="edge"),
        )
        for (writer, reader), score in result.edge_scores.items():
            scores[graph.edge_index(edge_key(writer, reader))] += score
    return (scores / task.n_examples).float()


def main() -> None:
    """Run the comparison and write the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=args.layers, n_head=args.heads, n_embd=args.d_model, vocab_size=512,
        n_positions=64, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as directory:
        GPT2LMHeadModel(config).save_pretrained(directory)
        model = TransformerBridge.boot_transformers(directory, device="cpu")
    model.eval()
    graph = ComputationalGraph.from_model(model)
    task = induction_task(seq_len=8, n=args.pairs, d_vocab=512, seed=0)

    start = time.perf_counter()
    ours = eap(model, task, graph, EAPConfig(direction="denoising", batch_size=args.batch_size))
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    theirs = tl_scores(model, task, graph)
    t_theirs = time.perf_counter() - start

    diff = float((ours.edge_scores - theirs).abs().max())
    scale = float(theirs.abs().max())
    lines = [
        "# Batched EAP vs TransformerLens `attribution_patch` (edge granularity)",
        "",
        f"GPT-2 architecture (random init, Hugging Face format, `boot_transformers`): "
        f"{args.layers} layers, {args.heads} heads, d_model {args.d_model}; "
        f"{graph.n_edges} edges; {args.pairs} induction prompt pairs of 16 tokens, "
        f"logit difference over the 7 induction positions; denoising direction; "
        f"CPU, torch {torch.__version__}, {args.threads} thread(s), "
        f"batch {args.batch_size}.",
        "",
        "| implementation | passes | time (s) |",
        "|---|---|---|",
        f"| TransformerLens, one pair at a time | {2 * args.pairs} fwd + {args.pairs} bwd "
        f"| {t_theirs:.2f} |",
        f"| circuitreg EAP, batched | {ours.n_forward} fwd + {ours.n_backward} bwd "
        f"| {t_ours:.2f} |",
        "",
        f"Speed-up: **{t_theirs / t_ours:.1f}x**. Largest absolute score difference: "
        f"**{diff:.2e}** (largest |score| {scale:.2e}).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
