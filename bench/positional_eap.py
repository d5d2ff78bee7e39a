"""Positional EAP on GPT-2 small's shape against TransformerLens 4's ``attribution_patch``.

Issue 18, item 6. The model is the randomly initialised GPT-2-small-shaped checkpoint of
``bench/scale.py`` (``circuitreg make-random-model gpt2-small``; speed and memory do not
depend on the weights), booted with ``TransformerBridge.boot_transformers`` (TransformerLens's
edge attribution needs its per-head result hooks). The task is the induction task without
BOS: ``--pairs`` prompt pairs of 16 tokens (two repeats of 8 random tokens), logit
difference at the 7 induction positions. In one process, on the same prompts:

- the reference: the bridge's own two batched forwards (clean with gradients, corrupted
  without) and one backward, what attribution patching costs at least (``bench/scale.py``'s
  reference row);
- circuitreg's EAP unpositioned, positional by token index (32,491 x 16 = 519,856
  positional edges) and positional by span, each in the denoising direction (TransformerLens's:
  the same quantity, the same cost as noising), best of ``--repeats``;
- TransformerLens's ``attribution_patch`` at edge granularity, one pair at a time (it takes
  one), its per-position (writer, reader) scores averaged over the pairs onto our positional
  edges; its scores must equal ours to 1e-4 of the largest.

Then peak memory, each run in its own process (the model loaded, then the kernel's peak
resident set reset through ``/proc/self/clear_refs`` so the load's own peak is not counted):
positional and unpositioned EAP at 16 tokens (``--pairs``) and at 128 tokens
(``--long-pairs`` pairs of two repeats of 64 tokens), beside the dense ``[n_edges, T]``
score tensor's size in float32 and float64 and as a safetensors file.

Writes ``bench/results/positions.md``.

    python bench/positional_eap.py [--pairs 8] [--long-pairs 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "positions.md"
CACHE = Path(os.environ.get("CIRCUITREG_BENCH_CACHE", Path.home() / ".cache" / "circuitreg-bench"))
SHAPE = "gpt2-small"


def model_dir() -> Path:
    """The random GPT-2-small-shaped checkpoint, written once into the bench cache (the
    same one ``bench/scale.py`` uses)."""
    from circuitreg.workers.random_models import MARKER_FILE, write_random_model

    directory = CACHE / SHAPE
    if not (directory / MARKER_FILE).exists():
        write_random_model(SHAPE, directory, seed=0)
    return directory


def load() -> Any:
    """The bridge, one prompt already through it (first-call set-up is nobody's cost)."""
    from circuitreg.workers.models import load_model

    bridge = load_model(str(model_dir()), "cpu").bridge
    bridge.eval()
    with torch.no_grad():
        bridge(torch.zeros(1, 4, dtype=torch.long))
    return bridge


def make_task(vocab: int, pairs: int, half: int) -> Any:
    """Induction prompts of ``2 * half`` tokens, with named spans where the task has none:
    ``A-first`` (token 0), ``B-first`` (token 1) and ``A-second`` (token ``half``), the
    induction toy's positions."""
    from circuitreg.workers.positions import TokenSpans
    from circuitreg.workers.tasks.induction import induction_task

    task = induction_task(seq_len=half, n=pairs, d_vocab=vocab, seed=0)
    if task.spans is not None:
        return task
    index = torch.full((pairs, 2 * half), -1, dtype=torch.long)
    index[:, 0], index[:, 1], index[:, half] = 0, 1, 2
    return replace(task, spans=TokenSpans(("A-first", "B-first", "A-second"), index))


def best_of(repeats: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """The fastest of ``repeats`` calls and the last call's result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def reference(bridge: Any, task: Any) -> None:
    """Two batched forwards of the bridge and one backward."""
    clean = bridge(task.clean)
    with torch.no_grad():
        bridge(task.corrupted)
    clean.sum().backward()
    bridge.zero_grad(set_to_none=True)


def run_eap(bridge: Any, task: Any, positions: str | None) -> Any:
    from circuitreg.workers.graph import ComputationalGraph
    from circuitreg.workers.methods.eap import EAPConfig, eap
    from circuitreg.workers.positions import PositionMap

    size = None if positions is None else PositionMap.for_task(task, positions).size
    graph = ComputationalGraph.from_model(bridge, positions=size)
    config = EAPConfig(direction="denoising", positions=positions, batch_size=task.n_examples)
    return eap(bridge, task, graph, config)


def transformer_lens(bridge: Any, task: Any) -> torch.Tensor:
    """TransformerLens's positional edge attribution, one pair at a time, averaged, as
    ``[n_edges, T]`` in our edge order."""
    from transformer_lens.tools.analysis.attribution_patching import (
        EdgeAttributionConfig,
        attribution_patch,
    )

    from circuitreg.schema.names import edge_name, head_name, mlp_name
    from circuitreg.workers.graph import ComputationalGraph

    graph = ComputationalGraph.from_model(bridge)

    def node(n: Any) -> str:
        if n.kind == "embed":
            return "input"
        if n.kind == "attn_head_out":
            return head_name(int(n.layer), int(n.head))
        return mlp_name(int(n.layer))

    def key(writer: Any, reader: Any) -> tuple[int, int]:
        if writer.position != reader.position:
            raise AssertionError("TransformerLens scored a cross-position edge")
        if reader.kind in ("q_input", "k_input", "v_input"):
            name = edge_name(node(writer), head_name(int(reader.layer), int(reader.head)),
                             reader.kind[0])  # fmt: skip
        else:
            name = edge_name(node(writer), "logits" if reader.kind == "logits" else node(reader))
        return graph.edge_index(name), int(reader.position)

    out = torch.zeros(graph.n_edges, task.seq_len, dtype=torch.float64)
    for i in range(task.n_examples):
        read, answer, wrong = task.positions[i], task.answers[i], task.distractors[i]

        def metric(logits: torch.Tensor, read: Any = read, a: Any = answer, w: Any = wrong) -> Any:
            at = logits[0, read]
            return (at.gather(-1, a[:, None]) - at.gather(-1, w[:, None])).mean()

        result = attribution_patch(
            bridge, task.clean[i : i + 1], task.corrupted[i : i + 1], metric,
            EdgeAttributionConfig(granularity="edge"),
        )  # fmt: skip
        for (writer, reader), score in result.edge_scores.items():
            out[key(writer, reader)] += float(score) / task.n_examples
    return out


def _hwm_mb() -> float:
    """The kernel's peak resident set of this process (VmHWM), MB."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", text).group(1)) / 1024  # type: ignore[union-attr]


def _rss_mb() -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024  # type: ignore[union-attr]


def memory_one(pairs: int, half: int, positions: str | None) -> dict[str, Any]:
    """One EAP run's peak resident memory above the loaded model (in this process)."""
    bridge = load()
    task = make_task(int(bridge.cfg.d_vocab), pairs, half)
    before = _rss_mb()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    start = time.perf_counter()
    result = run_eap(bridge, task, positions)
    seconds = time.perf_counter() - start
    out: dict[str, Any] = {"rss_before_mb": round(before, 1), "seconds": round(seconds, 2),
                           "peak_above_mb": round(_hwm_mb() - before, 1)}  # fmt: skip
    if result.position_scores is not None:
        from safetensors.torch import save_file

        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / "position_scores.safetensors"
            save_file({"position_scores": result.position_scores.contiguous()}, str(path))
            out["safetensors_bytes"] = path.stat().st_size
        out["shape"] = list(result.position_scores.shape)
    return out


def artifact_bytes(tokens: int) -> int:
    """The size of the stores' positional artifact (``circuitreg.services.positional_scores``:
    float32 ``[n_edges, T]`` and, in its header, the edge names and labels) for GPT-2 small
    at ``tokens`` positions; it does not depend on the scores' values."""
    from types import SimpleNamespace

    from circuitreg.services.positional_scores import encode_positional
    from circuitreg.workers.graph import ComputationalGraph
    from circuitreg.workers.methods.positional_document import positional_scores
    from circuitreg.workers.positions import PositionMap

    cfg = SimpleNamespace(n_layers=12, n_heads=12, attn_only=False, parallel_attn_mlp=False)
    graph = ComputationalGraph.from_cfg(cfg, positions=tokens)
    labels = tuple(str(i) for i in range(tokens))
    positions = PositionMap("index", labels, tuple(range(tokens)))
    scores = torch.randn(graph.n_edges, tokens)
    return len(encode_positional("bench", positional_scores(graph, positions, scores)))


def memory(pairs: int, half: int, positions: str | None) -> dict[str, Any]:
    """``memory_one`` in a child process."""
    command = [sys.executable, __file__, "--memory-one", f"{pairs},{half},{positions or ''}"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def speed(pairs: int, repeats: int) -> dict[str, Any]:
    """Reference, EAP unpositioned / index / spans, TransformerLens; and the parity."""
    bridge = load()
    task = make_task(int(bridge.cfg.d_vocab), pairs, 8)
    figures: dict[str, Any] = {}
    figures["reference"], _ = best_of(repeats, lambda: reference(bridge, task))
    figures["eap"], _ = best_of(repeats, lambda: run_eap(bridge, task, None))
    figures["index"], ours = best_of(repeats, lambda: run_eap(bridge, task, "index"))
    figures["spans"], spanned = best_of(repeats, lambda: run_eap(bridge, task, "spans"))
    start = time.perf_counter()
    theirs = transformer_lens(bridge, task)
    figures["transformer_lens"] = time.perf_counter() - start
    scale = float(theirs.abs().max())
    figures["largest"] = scale
    figures["max_diff"] = float((ours.position_scores.double() - theirs).abs().max())
    figures["span_sum_diff"] = float(
        (spanned.position_scores.sum(-1) - ours.position_scores.sum(-1)).abs().max()
    )
    figures["n_positional"] = int(ours.position_scores.numel())
    figures["passes"] = (ours.n_forward, ours.n_backward)
    figures["span_labels"] = list(spanned.positions.labels)
    return figures


def _mb(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f}"


MemoryRuns = dict[tuple[int, int, str | None], dict[str, Any]]
"""(tokens, pairs, positions mode or None) -> ``memory``'s figures."""


def write(args: argparse.Namespace, fig: dict[str, Any], mem: MemoryRuns) -> str:
    ref, idx, tl = fig["reference"], fig["index"], fig["transformer_lens"]
    n_edges = fig["n_positional"] // 16
    rel = fig["max_diff"] / fig["largest"]
    lines = [
        f"# Positional EAP vs TransformerLens 4 `attribution_patch` ({SHAPE} shape)",
        "",
        f"{dt.date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} "
        f"CPUs (load {os.getloadavg()[0]:.1f} at the end), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads. Random weights of GPT-2 small's shape "
        f"(`circuitreg make-random-model gpt2-small`, booted with `boot_transformers`), "
        f"{args.pairs} induction prompt pairs x 16 tokens, logit difference at the 7 "
        f"induction positions, denoising direction. Times are the best of {args.repeats} "
        f"(TransformerLens: one run). Command:",
        "",
        f"    python bench/positional_eap.py --pairs {args.pairs} --long-pairs "
        f"{args.long_pairs} --repeats {args.repeats}",
        "",
        "| run | positional edges | passes | seconds | x reference |",
        "| --- | --- | --- | --- | --- |",
        f"| reference: the bridge's 2 batched forwards + 1 backward | | 2 fwd + 1 bwd "
        f"| {ref:.2f} | 1.00 |",
        f"| circuitreg EAP, unpositioned | ({n_edges:,} edges) | 2 fwd + 1 bwd "
        f"| {fig['eap']:.2f} | {fig['eap'] / ref:.2f} |",
        f"| **circuitreg EAP, positions=index** | {fig['n_positional']:,} "
        f"| {fig['passes'][0]} fwd + {fig['passes'][1]} bwd | **{idx:.2f}** "
        f"| **{idx / ref:.2f}** |",
        f"| circuitreg EAP, positions=spans ({', '.join(fig['span_labels'])}) "
        f"| {n_edges * len(fig['span_labels']):,} | 2 fwd + 1 bwd | {fig['spans']:.2f} "
        f"| {fig['spans'] / ref:.2f} |",
        f"| TransformerLens `attribution_patch`, edge granularity, one pair at a time "
        f"| {fig['n_positional']:,} | {2 * args.pairs} fwd + {args.pairs} bwd | {tl:.2f} "
        f"| {tl / ref:.1f} |",
        "",
        f"- Parity: largest |ours - TransformerLens| over all {fig['n_positional']:,} "
        f"positional scores **{fig['max_diff']:.2e}**, largest |score| {fig['largest']:.2e}: "
        f"**{rel:.1e} relative** (bound 1e-4: {'met' if rel <= 1e-4 else 'NOT met'}).",
        f"- Positional EAP costs **{idx / ref:.2f}x** the reference (target <= 2x: "
        f"{'met' if idx / ref <= 2 else 'NOT met'}); TransformerLens / circuitreg = "
        f"**{tl / idx:.0f}x** (target >= 40x: {'met' if tl / idx >= 40 else 'NOT met'}).",
        f"- Span scores summed over their labels equal the index scores' sum to "
        f"{fig['span_sum_diff']:.1e} (absolute).",
        "",
        "## Memory",
        "",
        "Each run in its own process; peak resident set above the loaded model (the kernel's "
        "VmHWM, reset after loading through `/proc/self/clear_refs`).",
        "",
        "| tokens | pairs | run | seconds | peak above loaded model MB |",
        "| --- | --- | --- | --- | --- |",
    ]
    for (tokens, pairs, mode), figures in mem.items():
        name = "positional (index)" if mode else "unpositioned"
        if "error" in figures:
            lines.append(f"| {tokens} | {pairs} | {name} | {figures['error']} | |")
            continue
        lines.append(f"| {tokens} | {pairs} | {name} | {figures['seconds']:.2f} "
                     f"| {figures['peak_above_mb']:.0f} |")  # fmt: skip
    lines += ["", "Dense positional score tensor `[n_edges, T]` (32,491 edges): in memory, as a "
              "bare safetensors file of the run's float32 scores, and as the artifact the stores "
              "keep (`circuitreg.services.positional_scores`: the same tensor plus edge names and "
              "labels in its header):", "",
              "| T | float32 MB | float64 MB | safetensors file (float32) MB "
              "| stored artifact MB |",
              "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for (tokens, _pairs, mode), figures in mem.items():
        if mode and "safetensors_bytes" in figures:
            cells = n_edges * tokens
            lines.append(f"| {tokens} | {_mb(4 * cells)} | {_mb(8 * cells)} "
                         f"| {_mb(figures['safetensors_bytes'])} "
                         f"({figures['safetensors_bytes']:,} bytes) "
                         f"| {_mb(artifact_bytes(tokens))} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--long-pairs", type=int, default=2, help="pairs at 128 tokens")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--memory-one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_one:
        pairs, half, name = str(args.memory_one).split(",")
        print(json.dumps(memory_one(int(pairs), int(half), name or None)))
        return
    model_dir()
    mem: MemoryRuns = {}
    for tokens, pairs in ((16, args.pairs), (128, args.long_pairs)):
        modes: tuple[str | None, ...] = (None, "index")
        for mode in modes:
            mem[(tokens, pairs, mode)] = memory(pairs, tokens // 2, mode)
            print(tokens, pairs, mode, mem[(tokens, pairs, mode)], flush=True)
    figures = speed(args.pairs, args.repeats)
    print(json.dumps(figures), flush=True)
    text = write(args, figures, mem)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
