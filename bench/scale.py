"""Every method on a real model shape: wall time, passes and peak memory, one process each.

The model is a randomly initialised checkpoint of the shape (``circuitreg make-random-model``):
speed and memory do not depend on the weights. The task is the induction task without BOS,
``--pairs`` prompt pairs of 16 tokens (two repeats of 8 random tokens). Each method runs in
its own Python process so its peak resident memory (``ru_maxrss``; on CUDA also
``torch.cuda.max_memory_allocated``) is its own; a method that does not finish within
``--timeout`` seconds is reported as such, with the time it was given. The reference row is
two forwards and one backward of the bridge on the same prompts (what attribution patching
costs at least). One prompt goes through the model before the clock starts, so first-call
set-up is counted in no row. The last column is the engine's memory plan for the method's
pass (``workers/engine/memory.py``: examples and sets per pass, and the bytes it estimates
for them), to read beside the measured peak minus the loaded model.

Writes ``bench/results/scale.md``.

    python bench/scale.py [--shape gpt2-small] [--methods eap,eap_ig] [--device cuda]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "scale.md"
CACHE = Path(os.environ.get("CIRCUITREG_BENCH_CACHE", Path.home() / ".cache" / "circuitreg-bench"))
SEQ = 8  # induction halves: 16 tokens per prompt
METHODS = (
    "eap", "eap_ig", "activation_patching", "path_patching", "acdc", "mask_pruning", "verified",
)  # fmt: skip


def model_dir(shape: str) -> Path:
    """The random checkpoint of ``shape``, written once into the bench cache."""
    from circuitreg.workers.random_models import MARKER_FILE, write_random_model

    directory = CACHE / shape
    if not (directory / MARKER_FILE).exists():
        write_random_model(shape, directory, seed=0)
    return directory


def _peak(device: str) -> dict[str, float | None]:
    import torch

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    cuda = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    return {
        "peak_rss_mb": round(rss_mb, 1),
        "peak_cuda_mb": None if cuda is None else round(cuda, 1),
    }


def parse_params(text: str) -> dict[str, dict[str, str]]:
    """``"mask_pruning:steps=20,lr=0.1;verified:base_method=eap"`` as options per method."""
    out: dict[str, dict[str, str]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        method, _, options = part.partition(":")
        pairs = (o.split("=", 1) for o in options.split(",") if o.strip())
        out[method.strip()] = {key.strip(): value.strip() for key, value in pairs}
    return out


def run_one(
    shape: str, method: str, pairs: int, device: str, params: dict[str, str] | None = None
) -> dict[str, Any]:
    """One method (or ``reference``) in this process; returns its figures."""
    import torch

    from circuitreg.workers.graph import ComputationalGraph
    from circuitreg.workers.methods.registry import default_registry
    from circuitreg.workers.models import load_model
    from circuitreg.workers.tasks.induction import induction_task

    loaded = load_model(str(model_dir(shape)), device)
    vocab = int(loaded.bridge.cfg.d_vocab)
    task = induction_task(seq_len=SEQ, n=pairs, d_vocab=vocab, seed=0).to(loaded.device)
    graph = ComputationalGraph.from_model(loaded.bridge)
    with torch.no_grad():  # first-call set-up (hooks, allocator) is not the method's cost
        loaded.bridge(task.clean[:1])
    loaded_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if method == "reference":
        started = time.perf_counter()
        clean = loaded.bridge(task.clean)
        with torch.no_grad():
            loaded.bridge(task.corrupted)
        clean.sum().backward()
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "n_forward": 2, "n_backward": 1, "edges": graph.n_edges,
                "loaded_rss_mb": round(loaded_rss, 1), **_peak(device)}  # fmt: skip
    entry = default_registry().get(method)
    config = entry.config_cls.from_dict(params or {})
    estimate = _estimate(loaded.bridge, graph, task, method, config)
    started = time.perf_counter()
    result = entry.fn(loaded.bridge, task, graph, config)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "n_forward": result.n_forward,
        "n_backward": result.n_backward,
        "edges": graph.n_edges,
        "loaded_rss_mb": round(loaded_rss, 1),
        "outcome": {k: result.extra[k] for k in OUTCOME_KEYS if k in result.extra},
        **estimate,
        **_peak(device),
    }


# What a run decided, printed under the table: whether a verified circuit reached its target
# and was trimmed to the end, ACDC's kept edges, ...
OUTCOME_KEYS = ("reached", "trim_complete", "faithfulness", "n_kept", "verification_passes",
                "kept_edges")  # fmt: skip


WORKLOADS = {"eap": "attribution", "relp": "attribution", "eap_ig": "attribution",
             "mask_pruning": "patching_grad"}  # fmt: skip


def _estimate(model: Any, graph: Any, task: Any, method: str, config: Any) -> dict[str, Any]:
    """The engine's memory plan for the method's pass: examples per pass, sets per pass and
    the estimated bytes of that pass (``workers/engine/memory.py``), to set beside the peak."""
    from circuitreg.workers.engine import InterventionEngine

    workload = WORKLOADS.get(method, "patching")
    batch_size = int(getattr(config, "batch_size", 32))
    resolve = getattr(config, "resolve", None)  # mask pruning: its samples are its sets
    set_batch = 16 if resolve is None else int(resolve(graph.n_edges).mask_samples)
    engine = InterventionEngine(model, graph, task, batch_size=batch_size, verify=False,
                                workload=workload, set_batch=set_batch)  # type: ignore[arg-type]  # fmt: skip
    n = engine.batch_size
    sets = {"attribution": 1, "patching_grad": engine.set_batch}.get(
        workload, engine.sets_per_pass(n)
    )
    return {"planned_batch": n, "planned_sets": sets,
            "estimate_mb": round(n * engine.plan.cost.per_example(sets) / 2**20, 1)}  # fmt: skip


def measure(
    shape: str, method: str, pairs: int, device: str, timeout: float, params: str = ""
) -> dict[str, Any]:
    """Run ``method`` in a child process; its figures, or how it failed."""
    command = [sys.executable, __file__, "--one", method, "--shape", shape,
               "--pairs", str(pairs), "--device", device, "--params", params]  # fmt: skip
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {timeout:.0f} s"}
    if done.returncode < 0:  # the kernel's OOM killer sends SIGKILL
        return {"error": f"killed by signal {-done.returncode} (out of memory?) after "
                         f"{time.perf_counter() - started:.0f} s"}  # fmt: skip
    if done.returncode != 0:
        lines = [x for x in done.stderr.strip().splitlines() if "Loading weights" not in x]
        last = (lines or ["no output"])[-1]
        return {"error": last[:200], "wall": time.perf_counter() - started}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _row(shape: str, method: str, figures: dict[str, Any]) -> str:
    if "error" in figures:
        return f"| {shape} | {method} | {figures['error']} | | | | | |"
    cuda = figures.get("peak_cuda_mb")
    return (
        f"| {shape} | {method} | {figures['seconds']:.2f} | {figures['n_forward']} | "
        f"{figures['n_backward']} | {figures['peak_rss_mb']:.0f} (model loaded: "
        f"{figures['loaded_rss_mb']:.0f}) | {'' if cuda is None else f'{cuda:.0f}'} | "
        f"{_plan(figures)} |"
    )


def _plan(figures: dict[str, Any]) -> str:
    if "estimate_mb" not in figures:
        return ""
    return (f"{figures['estimate_mb']:.0f} ({figures['planned_batch']} examples x "
            f"{figures['planned_sets']} sets)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="gpt2-small")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per method")
    parser.add_argument("--params", default="", help="options per method, e.g. "
                        "'mask_pruning:steps=20;path_patching:receivers=logits'")  # fmt: skip
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.one:
        options = parse_params(args.params).get(args.one)
        print(json.dumps(run_one(args.shape, args.one, args.pairs, args.device, options)))
        return
    model_dir(args.shape)
    rows, outcomes = [], []
    for method in ["reference", *args.methods.split(",")]:
        figures = measure(args.shape, method, args.pairs, args.device, args.timeout, args.params)
        options = parse_params(args.params).get(method)
        label = method + (
            f" ({', '.join(f'{k}={v}' for k, v in options.items())})" if options else ""
        )
        rows.append(_row(args.shape, label, figures))
        print(rows[-1], flush=True)
        if figures.get("outcome"):
            outcomes.append(f"- {label}: " + json.dumps(figures["outcome"]))
    header = (
        f"\n## {args.shape}, {args.pairs} pairs x 16 tokens, {args.device} "
        f"({dt.date.today()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})\n\n"
        f"`python bench/scale.py --shape {args.shape} --methods {args.methods} "
        f"--pairs {args.pairs} --device {args.device} --timeout {args.timeout:.0f}"
        + (f" --params '{args.params}'" if args.params else "")
        + "`\n\n"
        "| shape | method | seconds | forward | backward | peak RSS MB | peak CUDA MB "
        "| planned pass MB |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    if not args.out.exists():
        args.out.write_text(
            "# Methods on real model shapes (random weights)\n\nEach section is one run of "
            "`bench/scale.py`; see its docstring for what is measured.\n"
        )
    with args.out.open("a") as f:
        f.write(header + "\n".join(rows) + "\n")
        if outcomes:
            f.write(
                "\nOutcome of each run (from its result's extra):\n\n" + "\n".join(outcomes) + "\n"
            )


if __name__ == "__main__":
    main()
