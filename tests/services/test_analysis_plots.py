"""Validation charts are written as PNG and SVG beside the circuit JSON, per ablation."""

from __future__ import annotations

from pathlib import Path

import pytest

from circuitreg.schema import ValidationResult
from circuitreg.services.analysis.plots import (
    plot_ablation_controls,
    plot_faithfulness_curve,
    write_validation_plots,
)
from circuitreg.services.analysis.results import ABLATION_CONTROLS, FAITHFULNESS_CURVE

from .test_analysis_consistency import INDUCTION, make_doc

PERCENTAGES = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]


def curve(ablation: str) -> ValidationResult:
    rising = [min(1.0, p / 10) for p in PERCENTAGES]
    return ValidationResult(
        name=FAITHFULNESS_CURVE,
        ablation=ablation,
        metric="logit_diff",
        values={
            "percentages": PERCENTAGES,
            "faithfulness_signed": rising,
            "faithfulness_abs": [f * 0.9 for f in rising],
            "cpr": 0.5,
            "cmd": 0.2,
        },
    )


def controls(ablation: str) -> ValidationResult:
    rows = [
        {"name": "circuit_only", "metric": 2.5, "normalised": 0.95, "held": True},
        {"name": "circuit_ablated", "metric": 0.1, "normalised": 0.05, "held": True},
        {"name": "outside_ablated", "metric": 2.4, "normalised": 0.9, "held": True},
        {"name": "random_ablated", "metric": 1.0, "normalised": 0.4, "held": False},
    ]
    return ValidationResult(
        name=ABLATION_CONTROLS, ablation=ablation, metric="logit_diff", values={"rows": rows}
    )


def test_each_chart_is_written_as_png_and_svg(tmp_path: Path) -> None:
    paths = plot_faithfulness_curve(curve("resample"), tmp_path / "c.curve")
    paths += plot_ablation_controls(controls("resample"), tmp_path / "c.controls")
    assert [p.name for p in paths] == [
        "c.curve.png",
        "c.curve.svg",
        "c.controls.png",
        "c.controls.svg",
    ]
    for path in paths:
        data = path.read_bytes()
        if path.suffix == ".png":
            assert data.startswith(b"\x89PNG")
        else:
            assert b"<svg" in data
    assert b"CPR 0.500" in (tmp_path / "c.curve.svg").read_bytes()


def test_plots_for_every_ablation_beside_the_json(tmp_path: Path) -> None:
    doc = make_doc(INDUCTION).with_validation(
        curve("resample"), controls("resample"), curve("zero")
    )
    written = write_validation_plots(doc, tmp_path / "circuit.json")
    assert sorted(p.name for p in written) == [
        "circuit.controls.resample.png",
        "circuit.controls.resample.svg",
        "circuit.curve.resample.png",
        "circuit.curve.resample.svg",
        "circuit.curve.zero.png",
        "circuit.curve.zero.svg",
    ]
    assert all(p.stat().st_size > 0 for p in written)


def test_wrong_result_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected a 'faithfulness_curve' result"):
        plot_faithfulness_curve(controls("zero"), tmp_path / "x")
    incomplete = ValidationResult(name=ABLATION_CONTROLS, ablation="zero", metric="prob")
    with pytest.raises(ValueError, match="lacks values"):
        plot_ablation_controls(incomplete, tmp_path / "x")
