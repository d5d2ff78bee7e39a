"""Verified circuits (``verified``) on the recovery cases: ROC AUC, faithfulness and passes.

Every case of the recovery bench (``bench/recovery.py``: tracr reverse, full-length and
length-4 prompts, frac_prevs, pair_balance, the induction toy) and, with the ``tracr`` extra,
every unseen program (``bench/unseen_programs.py``), under zero ablation (the recovery bar's
ablation). ``verified`` runs on each base method of ``--bases`` with its defaults (target 0.9,
``mode=add``, F measured with KL, the base scoring with the task's logit_diff) and ACDC runs
with the recovery bench's settings on the same graph, for its AUC and its passes. ROC AUC is
of the verified method's scores (its circuit first, then the base ranking; see
``workers/methods/verified.py``), graded as the recovery bench grades (``groundtruth.recover``,
float64). *passes* are ``ScoreResult.n_forward``: the base method's plus the verification's
(engine preparation included); *verify* is the verification's alone. The bar of issue 19:
AUC >= 0.95 on every case at no more than a tenth of ACDC's passes.

Writes the section ``## Verified circuits`` of ``bench/results/recovery.md`` and of
``bench/results/method_costs.md`` (replacing it where it is there already).

    python bench/verified.py [--n 32] [--threads 2] [--bases eap_ig,eap] [--no-unseen]
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
from recovery import cases, method_params, unseen_cases

from circuitreg.workers.groundtruth import recover

RESULTS = Path(__file__).resolve().parent / "results"
SECTION = "## Verified circuits"
BAR = 0.95
ABLATION = "zero"


def replace_section(path: Path, text: str) -> None:
    """Put ``text`` (starting with ``SECTION``) in place of the file's old section, or last."""
    old = path.read_text() if path.exists() else ""
    head, found, tail = old.partition(SECTION)
    if found:
        rest = tail.split("\n## ", 1)
        tail = "\n## " + rest[1] if len(rest) > 1 else ""
    else:
        head, tail = old.rstrip("\n") + "\n\n", ""
    path.write_text(head + text.rstrip("\n") + "\n" + tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="prompt pairs per task")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bases", default="eap_ig,eap")
    parser.add_argument("--no-unseen", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bases = [b.strip() for b in args.bases.split(",") if b.strip()]
    lines = [
        "| case | true / all edges | method | ROC AUC | precision | recall | kept | F | "
        "passes (verify) | ACDC passes | passes / ACDC | ACDC AUC | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    misses: list[str] = []
    ratios: list[float] = []
    all_cases = cases(args.n) + ([] if args.no_unseen else unseen_cases(args.n))
    started = time.perf_counter()
    for label, bridge, task, truth, _ in all_cases:
        acdc, acdc_result = recover("acdc", bridge, task, truth, method_params("acdc", 0, ABLATION))
        for base in bases:
            params: dict[str, Any] = {"ablation": ABLATION, "base_method": base}
            start = time.perf_counter()
            rec, result = recover("verified", bridge, task, truth, params)
            seconds = time.perf_counter() - start
            ratio = result.n_forward / acdc_result.n_forward
            ratios.append(ratio)
            extra = result.extra
            lines.append(
                f"| {label} | {len(truth)}/{result.edge_scores.numel()} | verified({base}) | "
                f"{rec.roc_auc:.3f} | {rec.precision:.2f} | {rec.recall:.2f} | "
                f"{extra['n_kept']} | {extra['faithfulness']:.3f} | {result.n_forward} "
                f"({extra['verification_passes']}) | {acdc_result.n_forward} | {ratio:.2f} | "
                f"{acdc.roc_auc:.3f} | {seconds:.1f} |"
            )
            print(lines[-1], flush=True)
            if rec.roc_auc < BAR:
                misses.append(f"verified({base}) on {label}: AUC {rec.roc_auc:.3f}")
    unseen_note = (
        "unseen programs not run (--no-unseen)"
        if args.no_unseen
        else "unseen programs: " + ("included" if any(
            c[0].startswith("unseen") for c in all_cases) else "not run (no tracr extra)")
    )  # fmt: skip
    auc_verdict = (
        f"AUC >= {BAR} on every case." if not misses else "Below AUC 0.95: " + "; ".join(misses)
    )
    pass_verdict = f"Passes: {min(ratios):.2f}-{max(ratios):.2f} of ACDC's (the bar is 0.10), " + (
        "met." if max(ratios) <= 0.1 else "missed."
    )
    load = os.getloadavg()
    text = "\n".join([
        SECTION,
        "",
        f"Command: `python bench/verified.py --n {args.n} --threads {args.threads} --bases "
        f"{args.bases}{' --no-unseen' if args.no_unseen else ''}`; "
        f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}, {platform.machine()} "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}, load average {load[0]:.2f}; "
        f"{time.perf_counter() - started:.0f} s in all; {unseen_note}.",
        "",
        " ".join(__doc__.split("\n\n")[1].split()),
        "",
        f"**Bar**: {auc_verdict} {pass_verdict}",
        "",
        *lines,
        "",
    ])  # fmt: skip
    for name in ("recovery.md", "method_costs.md"):
        replace_section(RESULTS / name, text)
    print(auc_verdict, pass_verdict)


if __name__ == "__main__":
    main()
