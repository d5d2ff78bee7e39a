"""How much one method's recovery of a tracr program depends on which prompts it sees.

``bench/recovery.py`` grades every method on one draw of prompts per case; this runs one
method on one program over several task seeds (and both prompt balancings), so a single
lucky or unlucky draw is not read as the method's quality. Settings are the recovery bench's
(``method_params``), zero ablation by default. Programs: the committed fixtures (``reverse``,
``frac_prevs``, ``pair_balance``) or, with the ``tracr`` extra, those of
``bench/unseen_programs.py`` (``count_less_freq`` for ``make_count_less_freq``).

Writes ``bench/results/seed_spread_<program>_<method>.md``.

    python bench/seed_spread.py --program count_less_freq --method mask_pruning --seeds 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

import torch
from recovery import UNSEEN_FILE, method_params, tracr_truth

from circuitreg.workers.groundtruth import recover
from circuitreg.workers.models import load_model
from circuitreg.workers.tasks.base import TaskContext
from circuitreg.workers.tasks.registry import build_task

RESULTS = Path(__file__).resolve().parent / "results"
COMMITTED = ("reverse", "frac_prevs", "pair_balance")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--program", required=True)
    parser.add_argument("--method", required=True)
    parser.add_argument("--seeds", type=int, default=5, help="task seeds 0..seeds-1")
    parser.add_argument("--n", type=int, default=32, help="prompt pairs (recovery's default)")
    parser.add_argument("--ablation", default="zero")
    parser.add_argument("--mask-steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    torch.set_num_threads(args.threads)
    program = args.program if args.program in COMMITTED else f"{UNSEEN_FILE}:make_{args.program}"
    loaded = load_model(f"tracr:{program}", "cpu")
    context = TaskContext.from_loaded(loaded)
    params = method_params(args.method, args.mask_steps, args.ablation)
    lines = [
        "| balance | seed | ROC AUC | precision | recall | selected | circuit metric | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    aucs: dict[str, list[float]] = {}
    for balance in ("outputs", "none"):
        for seed in range(args.seeds):
            spec = f"tracr:program={program},n={args.n},seed={seed},balance={balance}"
            task = build_task(spec, context=context)
            truth, _ = tracr_truth(loaded, task, "")
            n_true = len(truth)  # the same for every seed: one length, one program
            start = time.perf_counter()
            rec, result = recover(args.method, loaded.bridge, task, truth, params)
            metric = result.extra.get("circuit_metric", result.extra.get("final_metric", ""))
            shown = f"{metric:.3f}" if isinstance(metric, float) else ""
            lines.append(
                f"| {balance} | {seed} | {rec.roc_auc:.3f} | {rec.precision:.2f} | "
                f"{rec.recall:.2f} | {rec.n_selected} | {shown} | "
                f"{time.perf_counter() - start:.1f} |"
            )
            print(lines[-1], flush=True)
            aucs.setdefault(balance, []).append(rec.roc_auc)
    summary = "; ".join(
        f"balance={b}: ROC AUC {min(v):.3f}-{max(v):.3f} over {len(v)} seeds"
        for b, v in aucs.items()
    )
    header = [
        f"# Seed spread: {args.method} on tracr {args.program}",
        "",
        f"Command: `python bench/seed_spread.py --program {args.program} --method "
        f"{args.method} --seeds {args.seeds} --n {args.n} --ablation {args.ablation}`, "
        f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}, torch {torch.__version__}.",
        "",
        f"{n_true} true edges; {args.ablation} ablation; the "
        "recovery bench's settings. *circuit metric*: the metric of the method's own circuit "
        "as the method reports it (mask pruning: the task metric, 1.0 for the clean model; "
        "ACDC: its own metric, KL to the clean outputs, 0 when identical).",
        "",
        summary,
        "",
    ]
    out = RESULTS / f"seed_spread_{args.program}_{args.method}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join([*header, *lines, ""]))
    print(summary)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
