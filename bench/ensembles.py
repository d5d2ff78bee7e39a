"""Ensembles, bootstrap sign-consistency, the EAP-IG warm start and the optimal selection,
measured: recovery of known circuits, MIB's faithfulness curve, CPR and CMD, and the passes.

Cases: the induction toy (true edges derived from its head-detector scores) and the tracr
programs ``reverse``, ``frac_prevs`` and ``pair_balance`` (true edges read off the compiled
weights, on inputs of the prompts' length), as in ``bench/recovery.py``.

*Methods.* Each runs through ``groundtruth.recover`` (float64, scores at rounding level count
as 0): ROC AUC of |score| against the truth, precision/recall of the method's own circuit
(mask pruning) or its top-k with k = true edges. Its scores, oriented so that positive helps
(``services.analysis.orientation``), then give MIB's faithfulness curve from
``workers.validation.faithfulness.faithfulness_curve`` (circuits of the top 0.1 .. 100% of
the edges, dangling edges pruned): CPR, the area under the curve ranked by signed score
(higher is better), and CMD, the area between the curve ranked by |score| and 1 (lower is
better), both trapezoids over the fraction of edges kept, on the same ablation as the run.
Rows with mask pruning run with zero ablation only (the recovery bar's ablation, where every
true edge is visible), to keep the bench within minutes; EAP, EAP-IG, their ensembles and the
bootstraps run with the tasks' resample corruption too, where scores take both signs.

*Selections.* On one method's scores (EAP-IG, and the EAP+EAP-IG ensemble), ``top_k``,
``greedy`` and ``optimal`` each choose a circuit of K edges for every K of the curve (K =
``top_n_count(p, n_edges)``); the faithfulness of each circuit gives the selection's curve,
its area (CPR-style, but every selection ranks by |score|) and CMD, the same trapezoids; the
edges each of those circuits kept are listed (top_k and optimal never keep an edge scored 0
except to connect others, so on a graph with few scored edges their curve stops growing where
MIB's top-n curve, and greedy, which grows through unscored edges, reach the whole graph). At
K = the number of true edges the table gives the total |score| kept, the edges kept,
precision and recall.

*Scale.* The optimal selection's solve time on GPT-2 small's graph (32,491 edges) with random
heavy-tailed scores (``randn ** 3``): the one place the MILP's time limit matters here.

Writes a section of ``bench/results/recovery.md`` and of ``bench/results/method_costs.md``
(between ``<!-- ensembles:begin -->`` and ``<!-- ensembles:end -->``; ``bench/recovery.py`` and
``bench/method_costs.py`` rewrite their whole files, so rerun this after them).

    python bench/ensembles.py [--n 32] [--threads 2] [--mask-steps 300] [--bootstrap 20]
        [--ablations zero,resample] [--scale-k 100] [--scale-seeds 0,1]
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
from recovery import tracr_truth

from circuitreg.services.analysis.orientation import helpful_sign
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.groundtruth import (
    GRADING_DTYPE,
    ROUNDING_EPSILONS,
    above_rounding,
    induction_ground_truth,
    precision_recall,
    recover,
    truth_mask,
)
from circuitreg.workers.methods.base import ConfigError, ScoreResult
from circuitreg.workers.methods.selection import Selection, SelectionMode, explain_selection
from circuitreg.workers.methods.selection_optimal import objective
from circuitreg.workers.models import load_model
from circuitreg.workers.tasks.base import TaskContext
from circuitreg.workers.tasks.registry import build_task
from circuitreg.workers.validation.api import EngineEvaluator
from circuitreg.workers.validation.base import evaluate_with_anchors
from circuitreg.workers.validation.faithfulness import (
    CURVE_PERCENTAGES,
    faithfulness_curve,
    top_n_count,
    trapezoid_area,
)

RESULTS = Path(__file__).resolve().parent / "results"
BEGIN, END = "<!-- ensembles:begin -->", "<!-- ensembles:end -->"
MASK = "mask_pruning"


SIGNED = ("resample", "zero")  # rows whose signs matter run under both ablations
ZERO_ONLY = ("zero",)


def runs(
    mask_steps: int, n_bootstrap: int
) -> list[tuple[str, str, dict[str, Any], tuple[str, ...]]]:
    """(label, method, params, ablations) of every row: the members alone, then the new
    methods. Mask pruning's rows run with zero ablation only (the recovery bar's ablation) to
    keep the bench within minutes; the gradient methods, their ensemble and the bootstraps
    run with both, since resampling is where scores take both signs."""
    mask = {"sparsity_control": "lambda", "steps": mask_steps}  # the recovery bench's setting
    mask_members = f"mask_pruning.sparsity_control=lambda,mask_pruning.steps={mask_steps}"
    boot = {"n_bootstrap": n_bootstrap, "sign_agreement": 0.9}
    short = max(1, mask_steps // 3)  # does the warm start need fewer steps?
    return [
        ("eap", "eap", {}, SIGNED),
        ("eap_ig", "eap_ig", {}, SIGNED),
        ("mask_pruning", MASK, mask, ZERO_ONLY),
        ("mask_pruning warm_start=eap_ig", MASK, mask | {"warm_start": "eap_ig"}, ZERO_ONLY),
        (f"mask_pruning steps={short}", MASK, mask | {"steps": short}, ZERO_ONLY),
        (
            f"mask_pruning steps={short} warm_start=eap_ig",
            MASK,
            mask | {"steps": short, "warm_start": "eap_ig"},
            ZERO_ONLY,
        ),
        ("ensemble eap,eap_ig mean", "ensemble", {"methods": "eap,eap_ig"}, SIGNED),
        (
            "ensemble eap,eap_ig min",
            "ensemble",
            {"methods": "eap,eap_ig", "combine": "min"},
            SIGNED,
        ),
        (
            "ensemble eap_ig,mask_pruning mean",
            "ensemble",
            {"methods": "eap_ig,mask_pruning", "member_params": mask_members},
            ZERO_ONLY,
        ),
        (
            f"bootstrap eap B={n_bootstrap} q=0.9",
            "bootstrap",
            {"base_method": "eap"} | boot,
            SIGNED,
        ),
        (
            f"bootstrap eap_ig B={n_bootstrap} q=0.9",
            "bootstrap",
            {"base_method": "eap_ig"} | boot,
            SIGNED,
        ),
    ]


SELECTION_SCORES = ("eap_ig", "ensemble eap,eap_ig mean")
MODES: tuple[SelectionMode, ...] = ("top_k", "greedy", "optimal")


def cases(n: int) -> list[tuple[str, Any, Any, tuple[str, ...]]]:
    """(label, bridge, task, true edges): the toy and three tracr programs."""
    out = []
    loaded = load_model("toy:induction", "cpu")
    task = build_task(f"induction:n={n}", context=TaskContext.from_loaded(loaded))
    out.append(("toy induction", loaded.bridge, task, induction_ground_truth(loaded.bridge).edges))
    for program in ("reverse", "frac_prevs", "pair_balance"):
        loaded = load_model(f"tracr:{program}", "cpu")
        task = build_task(f"tracr:program={program},n={n}", context=TaskContext.from_loaded(loaded))
        out.append((f"tracr {program}", loaded.bridge, task, tracr_truth(loaded, task, "")[0]))
    return out


def oriented(result: ScoreResult) -> torch.Tensor:
    """Scores with positive = helps (what MIB's signed CPR ranking assumes)."""
    sign, _ = helpful_sign(result.method, result.params, str(result.params.get("metric")))
    return result.edge_scores.detach().float().cpu() * sign


def selection_curve(
    evaluator: EngineEvaluator,
    scores: torch.Tensor,
    graph: ComputationalGraph,
    mode: SelectionMode,
) -> tuple[float, float, list[int]]:
    """Area under the curve of ``mode``'s circuits (one per curve size), CMD, and the edges
    each circuit kept."""
    counts = [top_n_count(p, graph.n_edges) for p in CURVE_PERCENTAGES]
    masks = [explain_selection(scores, graph, Selection(mode, k)).mask for k in counts]
    anchors, values = evaluate_with_anchors(evaluator, masks)
    curve = [anchors.normalise(v) for v in values]
    xs = [p / 100 for p in CURVE_PERCENTAGES]
    kept = [int(m.sum()) for m in masks]
    return trapezoid_area(xs, curve), trapezoid_area(xs, [abs(1 - f) for f in curve]), kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="prompt pairs per task")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mask-steps", type=int, default=300)
    parser.add_argument("--bootstrap", type=int, default=20, help="bootstrap resamples")
    parser.add_argument("--ablations", default="zero,resample")
    parser.add_argument("--scale-k", default="100", help="K values for the GPT-2-size solve")
    parser.add_argument("--scale-seeds", default="0,1", help="score seeds for that solve")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ablations = [a for a in args.ablations.split(",") if a]
    started = time.perf_counter()
    method_lines = [
        "| case | true / all edges | ablation | method | ROC AUC | precision | recall | "
        "selected | CPR | CMD | forward | backward | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    selection_lines = [
        "| case | ablation | scores | mode | K | kept | total \\|score\\| | precision | recall "
        "| faithfulness at K | curve area | CMD | kept along the curve | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    cost_lines = [
        "| case | edges | ablation | method | seconds | forward | backward |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    rounding = ROUNDING_EPSILONS * torch.finfo(GRADING_DTYPE).eps
    for label, bridge, task, truth in cases(args.n):
        graph = ComputationalGraph.from_model(bridge)
        positives = truth_mask(graph.edges, truth)
        notes.append(f"- {label}: {len(truth)} true edges of {graph.n_edges}; {task.corruption}")
        for ablation in ablations:
            evaluator = EngineEvaluator(bridge, task, graph, ablation, task.default_metric)
            scored: dict[str, torch.Tensor] = {}
            for row, method, params, row_ablations in runs(args.mask_steps, args.bootstrap):
                if ablation not in row_ablations:
                    continue
                start = time.perf_counter()
                try:
                    rec, result = recover(
                        method, bridge, task, truth, {**params, "ablation": ablation}
                    )
                except ConfigError as exc:
                    method_lines.append(f"| {label} | | {ablation} | {row} | refused: {exc} |"
                                        " | | | | | | | |")  # fmt: skip
                    print(method_lines[-1], flush=True)
                    continue
                seconds = time.perf_counter() - start
                helpful = oriented(result)
                cleaned = above_rounding(helpful.double(), rounding)
                scored[row] = cleaned
                curve = faithfulness_curve(evaluator, cleaned.float()).values
                method_lines.append(
                    f"| {label} | {len(truth)}/{graph.n_edges} | {ablation} | {row} | "
                    f"{rec.roc_auc:.3f} | {rec.precision:.2f} | {rec.recall:.2f} | "
                    f"{rec.n_selected} ({rec.selection}) | {curve['cpr']:.3f} | "
                    f"{curve['cmd']:.3f} | {result.n_forward} | {result.n_backward} | "
                    f"{seconds:.1f} |"
                )
                cost_lines.append(
                    f"| {label} | {graph.n_edges} | {ablation} | {row} | {seconds:.2f} | "
                    f"{result.n_forward} | {result.n_backward} |"
                )
                print(method_lines[-1], flush=True)
            for source in SELECTION_SCORES:
                if source not in scored:
                    continue
                scores, k = scored[source], len(truth)
                for mode in MODES:
                    start = time.perf_counter()
                    outcome = explain_selection(scores, graph, Selection(mode, k))
                    area, cmd, along = selection_curve(evaluator, scores, graph, mode)
                    seconds = time.perf_counter() - start
                    anchors, (at_k,) = evaluate_with_anchors(evaluator, [outcome.mask])
                    precision, recall = precision_recall(outcome.mask, positives)
                    kept_score = objective(scores.abs(), outcome.mask)
                    selection_lines.append(
                        f"| {label} | {ablation} | {source} | {mode} | {k} | "
                        f"{int(outcome.mask.sum())} | {kept_score:.4g} | "
                        f"{precision:.2f} | {recall:.2f} | {anchors.normalise(at_k):.3f} | "
                        f"{area:.3f} | {cmd:.3f} | {','.join(map(str, along))} | {seconds:.2f} |"
                    )
                    print(selection_lines[-1], flush=True)
    scale_lines = [
        "| graph | K | seed | mode | kept | total \\|score\\| | seconds | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    gpt2 = ComputationalGraph(n_layers=12, n_heads=12)
    for k in (int(v) for v in args.scale_k.split(",") if v):
        for seed in (int(v) for v in args.scale_seeds.split(",") if v):
            scores = torch.randn(gpt2.n_edges, generator=torch.Generator().manual_seed(seed)) ** 3
            for mode in MODES:
                start = time.perf_counter()
                outcome = explain_selection(scores, gpt2, Selection(mode, k))
                seconds = time.perf_counter() - start
                note = (outcome.note or "").replace("|", "\\|")
                scale_lines.append(
                    f"| GPT-2 small shape, {gpt2.n_edges} edges | {k} | {seed} | {mode} | "
                    f"{int(outcome.mask.sum())} | {objective(scores.abs(), outcome.mask):.1f} | "
                    f"{seconds:.2f} | {note} |"
                )
                print(scale_lines[-1], flush=True)
    total = time.perf_counter() - started
    load = os.getloadavg()
    command = (
        f"python bench/ensembles.py --n {args.n} --threads {args.threads} --mask-steps "
        f"{args.mask_steps} --bootstrap {args.bootstrap} --ablations {args.ablations} "
        f"--scale-k {args.scale_k} --scale-seeds {args.scale_seeds}"
    )
    stamp = (
        f"Command: `{command}`; {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}, "
        f"{total:.0f} s in all; host {platform.machine()} {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, load average {load[0]:.2f} at the end (other jobs share it)."
    )
    recovery_section = [
        BEGIN,
        "## Ensembles, bootstrap sign-consistency, warm start and the optimal selection",
        "",
        stamp,
        "",
        __doc__.split("\n\n")[1].replace("\n", " "),
        "",
        __doc__.split("\n\n")[2].replace("\n", " "),
        "",
        __doc__.split("\n\n")[3].replace("\n", " "),
        "",
        "Ensemble scores are each member's |score| / max |score| (after orienting positive = "
        "helps) combined per edge by mean, min or max; bootstrap scores are the base method's "
        "(oriented) where the sign agrees in at least q of the B resamples of the prompt "
        "pairs (seed 0), else 0; the warm start sets mask pruning's logits to init_logit * "
        "(2 r - 1), r the rank fraction of EAP-IG's |score|. ACDC is left out of the "
        "ensembles to keep the run within minutes on 2 cores.",
        "",
        *notes,
        "",
        "### Methods: recovery, CPR and CMD",
        "",
        *method_lines,
        "",
        "### Selections on the same scores: top_k, greedy and optimal",
        "",
        *selection_lines,
        "",
        "### The optimal selection at GPT-2 small's size",
        "",
        __doc__.split("\n\n")[4].replace("\n", " "),
        "",
        *scale_lines,
        END,
    ]
    cost_section = [
        BEGIN,
        "## Passes of the ensembles, bootstrap and the warm start",
        "",
        stamp,
        "",
        "From the same runs as the ensembles section of recovery.md (float64, so slower than "
        "the rows above; the seconds include the float64 conversion). Each composite's "
        "forward and backward passes are its members' sums: an ensemble adds its members; "
        f"bootstrap runs its base method B + 1 = {args.bootstrap + 1} times; the warm start "
        "adds one EAP-IG run to mask pruning.",
        "",
        *cost_lines,
        END,
    ]
    write_section(RESULTS / "recovery.md", recovery_section)
    write_section(RESULTS / "method_costs.md", cost_section)
    print(f"{total:.0f} s; wrote the ensembles sections of recovery.md and method_costs.md")


def write_section(path: Path, lines: list[str]) -> None:
    """Replace the text between the markers, or append it."""
    text = path.read_text() if path.exists() else ""
    section = "\n".join(lines)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
