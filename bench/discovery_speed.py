"""Batched intervention engine vs plain loops of one forward per edge set.

Every workload's edge sets are evaluated three ways, and the results compared:

1. the engine, stacking sets into each forward pass (``set_batch``; on the CPU it stacks
   fewer when a pass would outgrow the cache, ``InterventionEngine.sets_per_pass``);
2. the plain loop the issue names: one hooked forward of the bridge per edge set
   (``HookedEdgePatcher``: hooks record every writer and rewrite every reader's input), the
   way ACDC's original implementation patched edges;
3. the engine itself with one set per pass (isolates what stacking gains).

Workloads: random circuits (30% of edges patched) and ACDC-style candidates (one circuit plus
one more patched edge into the last layer or the logits per set) on two synthetic models, and
random circuits on the models the recovery bench uses (tracr ``frac_prevs`` and ``reverse``,
the induction toy) with their own tasks. A second table runs ACDC end to end on those models,
on the batched engine and on the hooked loop (one forward per measured edge), and checks that
both find the same circuit. A third compares with TransformerLens's hooked edge ablation
(``attribution_patching.faithfulness``) on a GPT-2 checkpoint loaded with
``boot_transformers``.

Writes ``bench/results/discovery_speed.md``.

    python bench/discovery_speed.py [--sets 256] [--set-batch 64] [--tl-sets 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
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

import circuitreg.workers.methods.acdc as acdc_module
from circuitreg.schema.names import parse_edge, parse_node
from circuitreg.workers.engine import HookedEdgePatcher, InterventionEngine
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.acdc import ACDCConfig, acdc
from circuitreg.workers.models import load_model
from circuitreg.workers.tasks.base import TaskContext, TaskData
from circuitreg.workers.tasks.induction import induction_task
from circuitreg.workers.tasks.registry import build_task

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
# (label, model spec, task spec): the recovery bench's models with their own tasks.
REAL = (
    ("tracr frac_prevs", "tracr:frac_prevs", "tracr:program=frac_prevs,n=32"),
    ("tracr reverse", "tracr:reverse", "tracr:program=reverse,n=32"),
    ("induction toy", "toy:induction", "induction:n=32"),
)


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


def device_name(device: str) -> str:
    """The device in words, for the table header."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


def timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    """Run once, return the result and the wall time."""
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def measure(
    label: str, kind: str, model: Any, task: TaskData, masks: torch.Tensor, set_batch: int
) -> dict[str, Any]:
    """Time the engine (stacked), the hooked loop and the engine's own loop on one workload."""
    graph = ComputationalGraph.from_model(model)
    masks = masks.float()
    batched_engine = InterventionEngine(model, graph, task, metric="kl", set_batch=set_batch)
    looped_engine = InterventionEngine(model, graph, task, metric="kl", set_batch=1)
    hooked = HookedEdgePatcher(model, graph, task, metric="kl")
    batched_engine.evaluate(masks[:2])  # warm-up and batch preparation, not timed
    looped_engine.evaluate(masks[:2])
    hooked.evaluate(masks[:2])
    before = batched_engine.n_forward
    batched, t_batched = timed(lambda: batched_engine.evaluate(masks))
    passes = batched_engine.n_forward - before
    hooked_values, t_hooked = timed(lambda: hooked.evaluate(masks))
    _, t_looped = timed(lambda: looped_engine.evaluate(masks))
    tokens = task.clean.to(batched_engine.device)

    def bare_forwards() -> torch.Tensor:
        with torch.no_grad():
            for _ in range(masks.shape[0]):
                out = model(tokens)
        return out

    _, t_bare = timed(bare_forwards)
    return {
        "model": label,
        "style": kind,
        "shape": f"{task.n_examples}x{task.seq_len}",
        "edges": graph.n_edges,
        "sets": masks.shape[0],
        "passes": passes,
        "batched_s": t_batched,
        "hooked_s": t_hooked,
        "loop_s": t_looped,
        "bare_s": t_bare,
        "max_diff": float((batched - hooked_values).abs().max()),
    }


def workloads(n_sets: int, device: str) -> list[tuple[str, str, Any, TaskData, torch.Tensor]]:
    """(model label, kind, bridge, task, masks) for every row of the first table."""
    out = []
    for name, cfg in MODELS.items():
        model = TransformerBridge.boot_native(cfg, device=device)
        graph = ComputationalGraph.from_model(model)
        task = induction_task(seq_len=8, n=16, d_vocab=cfg["d_vocab"], seed=0)
        generator = torch.Generator().manual_seed(0)
        out.append((name, "random", model, task,
                    torch.rand(n_sets, graph.n_edges, generator=generator) < 0.3))  # fmt: skip
        out.append((name, "acdc", model, task, acdc_style(graph, n_sets)))
    for label, model_spec, task_spec in REAL:
        loaded = load_model(model_spec, device)
        task = build_task(task_spec, context=TaskContext.from_loaded(loaded))
        graph = ComputationalGraph.from_model(loaded.bridge)
        generator = torch.Generator().manual_seed(0)
        masks = torch.rand(n_sets, graph.n_edges, generator=generator) < 0.3
        out.append((label, "random", loaded.bridge, task, masks))
    return out


def measure_acdc(
    label: str, model_spec: str, task_spec: str, set_batch: int, device: str
) -> dict[str, Any]:
    """ACDC end to end on the batched engine and on the hooked loop (one forward per edge).

    The hooked loop is swapped in for the engine inside ``acdc``'s module; it answers the
    same evaluation interface, holds one set per pass, so ACDC measures one edge per forward.
    """
    loaded = load_model(model_spec, device)
    task = build_task(task_spec, context=TaskContext.from_loaded(loaded))
    graph = ComputationalGraph.from_model(loaded.bridge)
    # The recovery bench's ACDC settings: with logit_diff and an absolute tau, a program
    # whose output is a value (frac_prevs) shows no mean effect under resampling and ACDC
    # keeps nothing, which times nothing useful.
    config = ACDCConfig(ablation="resample", metric="kl", relative_tau=True, set_batch=set_batch)
    acdc(loaded.bridge, task, graph, config)  # warm-up
    start = time.perf_counter()
    batched = acdc(loaded.bridge, task, graph, config)
    t_batched = time.perf_counter() - start

    def hooked_engine(model: Any, graph: ComputationalGraph, task: TaskData, ablation: str,
                      metric: Any, *_: Any) -> HookedEdgePatcher:  # fmt: skip
        return HookedEdgePatcher(model, graph, task, ablation, metric)

    acdc_module.InterventionEngine = hooked_engine  # type: ignore[assignment,misc]
    try:
        start = time.perf_counter()
        looped = acdc(loaded.bridge, task, graph, config)
        t_hooked = time.perf_counter() - start
    finally:
        acdc_module.InterventionEngine = InterventionEngine  # type: ignore[misc]
    same = bool((batched.circuit == looped.circuit).all())
    return {
        "model": label,
        "edges": graph.n_edges,
        "kept": batched.extra["n_kept"],
        "batched_s": t_batched,
        "batched_passes": batched.n_forward,
        "hooked_s": t_hooked,
        "hooked_passes": looped.n_forward,
        "same": same,
        "max_diff": float((batched.edge_scores - looped.edge_scores).abs().max()),
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


def measure_tl(n_sets: int, set_batch: int, device: str) -> dict[str, Any]:
    """Engine (batched) vs TransformerLens hooked edge ablation on a small HF GPT-2."""
    config = GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=64, n_positions=32,
                        bos_token_id=0, eos_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as directory:
        GPT2LMHeadModel(config).save_pretrained(directory)
        model = TransformerBridge.boot_transformers(directory, device=device)
    model.eval()
    graph = ComputationalGraph.from_model(model)
    task = induction_task(seq_len=6, n=4, d_vocab=64, seed=0).to(torch.device(device))
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
    """Run the benchmark and write the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=256)
    parser.add_argument("--set-batch", type=int, default=64)
    parser.add_argument("--tl-sets", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device: str = args.device
    rows = []
    for label, kind, model, task, masks in workloads(args.sets, device):
        rows.append(measure(label, kind, model, task, masks, args.set_batch))
        print(rows[-1], flush=True)
    acdc_rows = []
    for label, model_spec, task_spec in REAL:
        acdc_rows.append(measure_acdc(label, model_spec, task_spec, args.set_batch, device))
        print(acdc_rows[-1], flush=True)
    tl_row = measure_tl(args.tl_sets, args.set_batch, device)
    load = os.getloadavg()
    lines = [
        "# Discovery engine: batched edge-set evaluation vs one forward per set",
        "",
        f"Command: `python bench/discovery_speed.py --sets {args.sets} --set-batch "
        f"{args.set_batch} --tl-sets {args.tl_sets} --threads {args.threads}`, "
        f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}; torch {torch.__version__}, "
        f"{device_name(device)}, {args.threads} thread(s) of {os.cpu_count()} CPUs "
        f"({platform.machine()}), load average {load[0]:.2f} at the end.",
        "",
        "Resample ablation, KL metric. *random*: independent sets with 30% of edges "
        "patched; *acdc*: ACDC's candidates, one circuit plus one more patched edge into the "
        "last layer or the logits per set (the sets agree upstream, so the engine computes the "
        "shared layers once). Synthetic models run induction prompts, the others their own "
        "tasks (prompts x tokens in the table). *passes*: the engine's forward "
        "passes for all sets (at most "
        f"{args.set_batch} sets each, fewer on the CPU where a pass would outgrow the cache). "
        "*hooked loop*: one bridge forward per set with recording and rewriting hooks "
        "(`HookedEdgePatcher`), the plain loop; *bare forwards*: as many plain forwards of "
        "the bridge as there are sets, with no hook at all, a lower bound on any loop of one "
        "forward per set; *engine loop*: the engine with one set per pass. max |diff|: engine "
        "vs hooked loop, the same metric values from two implementations that share no "
        "forward code.",
        "",
        "| model | kind | prompts x tokens | edges | sets | passes | batched (s) | hooked loop (s) "
        "| speed-up | bare forwards (s) | speed-up | engine loop (s) | max |diff| |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['style']} | {r['shape']} | {r['edges']} | {r['sets']} | "
            f"{r['passes']} | {r['batched_s']:.3f} | {r['hooked_s']:.3f} | "
            f"**{r['hooked_s'] / r['batched_s']:.1f}x** | {r['bare_s']:.3f} | "
            f"{r['bare_s'] / r['batched_s']:.1f}x | {r['loop_s']:.3f} | {r['max_diff']:.1e} |"
        )
    lines += [
        "",
        "## ACDC end to end: batched engine vs one hooked forward per measured edge",
        "",
        "Resample ablation from each task's corrupted prompts, KL metric, tau 0.01 of the full "
        "effect (`relative_tau`, as in the recovery bench). "
        "The hooked run is the same `acdc` function with `HookedEdgePatcher` in place of the "
        "engine (one set per pass), so it measures one edge per forward. *same circuit*: "
        "both keep exactly the same edges.",
        "",
        "| model | edges | kept | batched (s) | passes | hooked loop (s) | forwards | speed-up "
        "| same circuit | max |score diff| |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in acdc_rows:
        lines.append(
            f"| {r['model']} | {r['edges']} | {r['kept']} | {r['batched_s']:.3f} | "
            f"{r['batched_passes']} | {r['hooked_s']:.3f} | {r['hooked_passes']} | "
            f"{r['hooked_s'] / r['batched_s']:.1f}x | {'yes' if r['same'] else 'NO'} | "
            f"{r['max_diff']:.1e} |"
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
