"""The default toy trains to an induction circuit that head_detector finds, for any seed.

Training the default config takes ~10 s on an idle 2-core CPU (longer when the machine is
busy), so these are marked slow; they still run in CI.
"""

from __future__ import annotations

import math

import pytest

from circuitreg.workers.models import load_model
from circuitreg.workers.toy import ToyConfig, ToyRun, detect_heads, ensure_induction_toy

pytestmark = pytest.mark.slow


def _layer(head: str) -> int:
    return int(head[1 : head.index(".")])


def _check_induction_circuit(run: ToyRun) -> None:
    curve = run.loss_curve
    chance = math.log(run.d_vocab - 1)
    start = sum(p.induction_loss for p in curve[:10]) / 10
    end = sum(p.induction_loss for p in curve[-20:]) / 20
    assert start > 0.9 * chance, "before training the repeats are at chance"
    assert end < 0.25 * chance, f"repeated-block loss {end:.2f} did not drop below a quarter"

    phase = run.phase_change_step()
    assert phase is not None and 20 < phase < run.config.steps
    # A phase change, not a steady decline: the drop happens within a short window.
    before = next(p.induction_loss for p in curve if p.step == max(0, phase - 60))
    assert before > 0.6 * start, "the loss was still near its plateau shortly before"

    bridge = load_model(str(run.final.path), "cpu").bridge
    heads = detect_heads(bridge, seq_len=run.seq_len, bos_token=run.bos_token)
    prev_name, prev_score = heads["previous_token_head"][0]
    ind_name, ind_score = heads["induction_head"][0]
    assert _layer(prev_name) == 0 and prev_score > 0.3, heads["previous_token_head"][:3]
    assert _layer(ind_name) == 1 and ind_score > 0.3, heads["induction_head"][:3]

    untrained = load_model(str(run.checkpoints[0].path), "cpu").bridge
    base = detect_heads(untrained, seq_len=run.seq_len, bos_token=run.bos_token)
    assert base["induction_head"][0][1] < ind_score / 2, "induction appears with training"


def test_default_toy_has_previous_token_and_induction_heads() -> None:
    _check_induction_circuit(ensure_induction_toy(ToyConfig()))


def test_another_seed_still_yields_the_circuit() -> None:
    _check_induction_circuit(ensure_induction_toy(ToyConfig(seed=1)))
