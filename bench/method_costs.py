"""What each discovery method costs on the same model and task: wall time and passes.

Every registered method runs once on each model with its task, with the recovery bench's
settings (``recovery.method_params``: ACDC on KL with a relative tau, mask pruning with a
fixed lambda and its ``auto`` parameterisation), so the rows of one model are comparable: the
same prompts, the same ablation, the same graph. The ablation is zero for tracr and the toy
(as in the recovery bench) and resampling for the synthetic model, which has LayerNorm: there
EAP-IG refuses zero ablation (its integral diverges at a zero input). *forward* and
*backward* are the passes the method itself counts (``ScoreResult.n_forward`` and
``n_backward``: engine passes, each holding many edge sets or integration steps); *seconds*
is the wall time of the call, model loading excluded. The synthetic model is the speed
bench's ``LN+MLP 4L4H d64`` (479 edges, so mask pruning's ``auto`` takes hard-concrete there).

Writes ``bench/results/method_costs.md``.

    python bench/method_costs.py [--device cuda] [--threads 2] [--methods relp,eap] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
from discovery_speed import MODELS
from recovery import VARIANTS, method_name, method_params
from transformer_lens.model_bridge import TransformerBridge

from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.base import default_selection
from circuitreg.workers.methods.registry import default_registry
from circuitreg.workers.methods.selection import Selection, select_edges
from circuitreg.workers.models import load_model
from circuitreg.workers.tasks.base import TaskContext, TaskData
from circuitreg.workers.tasks.induction import induction_task
from circuitreg.workers.tasks.registry import build_task

RESULTS = Path(__file__).resolve().parent / "results" / "method_costs.md"
SYNTHETIC = "LN+MLP 4L4H d64"


def models(device: str) -> list[tuple[str, Any, TaskData, str]]:
    """(label, bridge, task, ablation) for every model of the table."""
    out = []
    for label, model_spec, task_spec in (
        ("tracr reverse", "tracr:reverse", "tracr:program=reverse,n=32"),
        ("induction toy", "toy:induction", "induction:n=32"),
    ):
        loaded = load_model(model_spec, device)
        task = build_task(task_spec, context=TaskContext.from_loaded(loaded))
        out.append((f"{label} ({task_spec})", loaded.bridge, task, "zero"))
    cfg = MODELS[SYNTHETIC]
    bridge = TransformerBridge.boot_native(cfg, device=device)
    task = induction_task(seq_len=8, n=32, d_vocab=cfg["d_vocab"], seed=0)
    out.append((f"{SYNTHETIC} (induction prompts, n=32)", bridge, task, "resample"))
    return out


def kept_edges(result: Any, graph: ComputationalGraph) -> int:
    """Edges of the default selection (the method's own circuit, else its top 100)."""
    chosen = default_selection(result, graph)
    if isinstance(chosen, Selection):
        chosen = select_edges(result.edge_scores, graph, chosen)
    return int(torch.as_tensor(chosen).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mask-steps", type=int, default=300)
    parser.add_argument("--methods", default="", help="comma-separated methods (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    registry = default_registry()
    names = args.methods.split(",") if args.methods else [*registry.names(), *VARIANTS]
    lines = [
        "| model (task) | edges | ablation | method | seconds | forward | backward | kept edges |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, bridge, task, ablation in models(args.device):
        graph = ComputationalGraph.from_model(bridge)
        for name in names:
            info = registry.get(method_name(name))
            params = method_params(name, args.mask_steps, ablation)
            params = {"metric": task.default_metric} | params
            config = info.config(params)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            result = info.fn(bridge, task, graph, config)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            lines.append(
                f"| {label} | {graph.n_edges} | {ablation} | {name} | {seconds:.2f} | "
                f"{result.n_forward} | "
                f"{result.n_backward} | {kept_edges(result, graph)} |"
            )
            print(lines[-1], flush=True)
    load = os.getloadavg()
    header = [
        "# What each discovery method costs on the same model and task",
        "",
        f"Command: `python bench/method_costs.py --device {args.device} --threads "
        f"{args.threads} --mask-steps {args.mask_steps}`, "
        f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}; torch {torch.__version__}, "
        f"{args.device}, {args.threads} thread(s) of {os.cpu_count()} CPUs "
        f"({platform.machine()}), load average {load[0]:.2f} at the end.",
        "",
        __doc__.split("\n\n")[1].replace("\n", " "),
        "",
    ]
    text = "\n".join([*header, *lines, ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
