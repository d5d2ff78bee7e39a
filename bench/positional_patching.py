"""Positional edge patching against unpositioned patching: time per set and peak memory.

The engine patches positional edges (``workers/engine/positional.py``) with a forward of its
own: every set keeps its writers' outputs and each layer's readers take one small product
per token, where unpositioned patches share one large product (``stream.py``). This measures
what that costs, on randomly initialised native bridges (speed and memory do not depend on
the weights), on the induction task (2 x ``--half`` tokens):

* seconds per set of one pass of ``S`` sets over ``N`` prompts, positional (index mode,
  random 0/1 coefficients) beside unpositioned rows (random 0/1), same engine, same batch;
* the peak resident memory a pass adds above what the process held before it (VmHWM after
  ``/proc/self/clear_refs``; every allocation above 128 KiB is made its own mapping through
  ``MALLOC_MMAP_THRESHOLD_``, so freed tensors leave the resident set), for 1 and ``S``
  sets, without and with gradients; the slope per example and set is read beside the
  memory plan's estimate (``memory.py``, ``pass_cost(..., positional=True)``).

Each measurement runs in its own process. Writes ``bench/results/positional_patching.md``.

    python bench/positional_patching.py [--shapes small,medium] [--sets 8] [--threads 2]
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
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "positional_patching.md"
SHAPES: dict[str, dict[str, Any]] = {
    "small": dict(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=256),
    "medium": dict(n_layers=4, d_model=256, n_heads=8, d_head=32, d_mlp=1024),
    "gpt2-small": dict(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072),
}
COMMON = dict(d_vocab=512, n_ctx=64, attn_only=False, act_fn="gelu", normalization_type="LN",
              seed=0)  # fmt: skip


def _setup(shape: str, n: int, half: int) -> Any:
    import torch
    from transformer_lens.model_bridge import TransformerBridge

    from circuitreg.workers.engine import InterventionEngine
    from circuitreg.workers.graph import ComputationalGraph
    from circuitreg.workers.positions import PositionMap
    from circuitreg.workers.tasks.induction import induction_task

    model = TransformerBridge.boot_native(dict(COMMON, **SHAPES[shape]))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    graph = ComputationalGraph.from_model(model)
    task = induction_task(seq_len=half, n=n, d_vocab=512, seed=0)
    positions = PositionMap.for_task(task, "index")
    engine = InterventionEngine(model, graph, task, positions=positions, batch_size=n,
                                set_batch=10**6, memory_budget=2**40)  # fmt: skip
    torch.manual_seed(0)
    return engine, next(engine.batches()), positions.size


def _hwm_mb() -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", text).group(1)) / 1024  # type: ignore[union-attr]


def _rss_mb() -> float:
    text = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024  # type: ignore[union-attr]


def measure(shape: str, n: int, half: int, sets: int, kind: str, grad: bool) -> dict[str, Any]:
    """One pass of ``sets`` sets: seconds per set (best of 3) and peak memory above the
    process before it. The forwards are called directly, as one pass: ``engine.run`` would
    split the sets into passes that fit the CPU's cache (``sets_per_pass``)."""
    import torch

    from circuitreg.workers.engine.forward import run_forward
    from circuitreg.workers.engine.memory import Widths, pass_cost
    from circuitreg.workers.engine.positional import positional_forward

    engine, batch, q = _setup(shape, n, half)
    e = engine.graph.n_edges

    def forward(rows: torch.Tensor) -> torch.Tensor:
        args = (engine.weights, engine.graph, batch.embedded, batch.task.positions)
        if kind == "unpositioned":
            return run_forward(*args, patch=rows, ablated=batch.ablated).logits
        assert batch.labels is not None
        return positional_forward(
            *args, rows.view(rows.shape[0], e, q), batch.labels, ablated=batch.ablated
        ).logits

    patch = (torch.rand(sets, e * q if kind == "positional" else e) < 0.3).float()
    with torch.no_grad():
        forward(patch[:1])  # warm-up outside the measurement
    before = _rss_mb()
    Path("/proc/self/clear_refs").write_text("5")
    seconds = []
    for _ in range(3):
        rows = patch.clone().requires_grad_(grad)
        start = time.perf_counter()
        with torch.set_grad_enabled(grad):
            value = engine.metric_of(batch, forward(rows)).sum()
            if grad:
                value.backward()
        seconds.append(time.perf_counter() - start)
    widths = Widths.of(engine.weights, engine.graph, batch.task.seq_len)
    cost = pass_cost(widths, "patching_grad" if grad else "patching", kind == "positional")
    return {"seconds_per_set": min(seconds) / sets, "peak_above_mb": _hwm_mb() - before,
            "estimate_per_set_mb": cost.per_set * n / 2**20, "edges": e, "q": q}  # fmt: skip


def _child(args: argparse.Namespace, shape: str, sets: int, kind: str, grad: bool) -> dict:
    """One cell: seconds from a process with the default allocator, peak memory from one
    where every allocation above 128 KiB is its own mapping, returned to the system when
    freed, so the resident set follows the live tensors (glibc otherwise keeps freed heap
    resident, and a pass reusing it would count as free; the mappings' page faults make
    that process slower, so it is not timed)."""
    sizes = ["--n", str(args.n), "--half", str(args.half), "--threads", str(args.threads)]
    command = [sys.executable, __file__, "--child", json.dumps([shape, sets, kind, grad])]
    command += sizes
    mapped = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    runs = [subprocess.run(command, capture_output=True, text=True, check=True, env=env)
            for env in (dict(os.environ), mapped)]  # fmt: skip
    timed, measured = (dict(json.loads(r.stdout.strip().splitlines()[-1])) for r in runs)
    return dict(measured, seconds_per_set=timed["seconds_per_set"])


def _rows(args: argparse.Namespace, shape: str) -> list[str]:
    lines = []
    for grad in (False, True):
        got = {(kind, s): _child(args, shape, s, kind, grad)
               for kind in ("unpositioned", "positional") for s in (1, args.sets)}  # fmt: skip
        for kind in ("unpositioned", "positional"):
            one, many = got[(kind, 1)], got[(kind, args.sets)]
            slope = (many["peak_above_mb"] - one["peak_above_mb"]) / (args.sets - 1)
            lines.append(
                f"| {shape} | {many['edges']} x {many['q']} | {'yes' if grad else 'no'} | {kind} "
                f"| {1000 * one['seconds_per_set']:.1f} | {1000 * many['seconds_per_set']:.1f} "
                f"| {one['peak_above_mb']:.1f} | {many['peak_above_mb']:.1f} | {slope:.1f} "
                f"| {many['estimate_per_set_mb']:.1f} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="small,medium")
    parser.add_argument("--sets", type=int, default=8)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--half", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.child:
        shape, sets, kind, grad = json.loads(args.child)
        print(json.dumps(measure(shape, args.n, args.half, sets, kind, grad)))
        return
    table = [
        f"# Positional edge patching vs unpositioned ({dt.date.today()}, {platform.machine()}, "
        f"{args.threads} torch threads, CPU)",
        "",
        f"`python bench/positional_patching.py --shapes {args.shapes} --sets {args.sets}` "
        f"(N = {args.n} prompts of {2 * args.half} tokens, index positions, random 0/1 rows, "
        "LN + MLP native bridges, float32). Seconds per set: best of 3 passes of S sets "
        "(with gradients: forward and backward), one pass each (the forwards called "
        "directly; engine.run would split them to fit the CPU's cache), default allocator. "
        "Peak: resident memory a pass adds above the process before it (VmHWM, allocations "
        "over 128 KiB mapped and returned when freed), one process per measurement; per "
        "set: (peak at S - peak at 1) / (S - 1), beside the memory plan's per-set estimate "
        "for N examples.",
        "",
        f"| shape | edges x Q | grad | patch | ms/set S=1 | ms/set S={args.sets} "
        f"| peak MB S=1 | peak MB S={args.sets} | measured MB/set | planned MB/set |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for shape in args.shapes.split(","):
        table.extend(_rows(args, shape))
    RESULTS.write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
