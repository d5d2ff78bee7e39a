"""Time the toy induction model's training from scratch and check what it learned.

    python bench/toy_train.py [--seeds 0 1 2]

For each seed: wall time of ``train_induction`` (no cache), the induction phase-change step,
the final repeated-block loss, and head_detector's best previous-token and induction heads.
Prints a Markdown table and writes it to bench/results/toy_train.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    """Train each seed's default toy and tabulate time, phase change and heads."""
    from circuitreg.workers.models import load_model
    from circuitreg.workers.toy import ToyConfig, detect_heads, train_induction

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    rows = [
        "| seed | train s | phase step | final block loss | prev-token head | induction head |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            config = ToyConfig(seed=seed)
            started = time.perf_counter()
            run = train_induction(config, out_dir=Path(tmp) / str(seed))
            seconds = time.perf_counter() - started
            heads = detect_heads(load_model(str(run.final.path), "cpu").bridge, seq_len=run.seq_len)
            prev, ind = heads["previous_token_head"][0], heads["induction_head"][0]
            rows.append(
                f"| {seed} | {seconds:.1f} | {run.phase_change_step()} | "
                f"{run.loss_curve[-1].induction_loss:.3f} | {prev[0]} ({prev[1]:.2f}) | "
                f"{ind[0]} ({ind[1]:.2f}) |"
            )
            print(rows[-1], flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    header = (
        f"Toy induction training, default ToyConfig, {torch.get_num_threads()} torch threads "
        f"available (training uses 1), load average at end {load:.1f}.\n\n"
    )
    table = header + "\n".join(rows) + "\n"
    print(table)
    out = Path(__file__).resolve().parent / "results" / "toy_train.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)


if __name__ == "__main__":
    main()
