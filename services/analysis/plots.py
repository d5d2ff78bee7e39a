"""Charts of validation results: the faithfulness curve and the ablation control table.

Figures are built with ``matplotlib.figure.Figure`` and its Agg canvas, never pyplot: no
global figure state and no display backend, so the API can draw them in worker threads.
Each chart is written twice, PNG for people and SVG for documents, next to the circuit JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from circuitreg.schema import CircuitDocument, ValidationResult

from .results import ABLATION_CONTROLS, FAITHFULNESS_CURVE, latest_result

FORMATS = ("png", "svg")


def plot_faithfulness_curve(result: ValidationResult, stem: Path) -> list[Path]:
    """Faithfulness against the percentage of edges kept, for signed and absolute ranking."""
    _require(result, FAITHFULNESS_CURVE, ("percentages", "faithfulness_signed", "faithfulness_abs"))
    values = result.values
    figure = Figure(figsize=(6.4, 4.2))
    axes = figure.add_subplot()
    percentages = [float(p) for p in values["percentages"]]
    axes.plot(
        percentages,
        values["faithfulness_signed"],
        marker="o",
        label=f"top by signed score (CPR {values.get('cpr', float('nan')):.3f})",
    )
    axes.plot(
        percentages,
        values["faithfulness_abs"],
        marker="s",
        label=f"top by |score| (CMD {values.get('cmd', float('nan')):.3f})",
    )
    axes.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="full model")
    axes.axhline(0.0, color="grey", linestyle=":", linewidth=1, label="empty circuit")
    axes.set_xscale("log")
    axes.set_xlabel("edges kept (%)")
    axes.set_ylabel("faithfulness")
    axes.set_title(f"Faithfulness curve ({result.ablation} ablation, {result.metric})")
    axes.legend(loc="best", fontsize="small")
    return _save(figure, stem)


def plot_ablation_controls(result: ValidationResult, stem: Path) -> list[Path]:
    """One bar per control row (normalised metric), green where the expectation held."""
    _require(result, ABLATION_CONTROLS, ("rows",))
    rows: list[dict[str, Any]] = list(result.values["rows"])
    figure = Figure(figsize=(7.2, 4.2))
    axes = figure.add_subplot()
    labels = [str(row["name"]).replace("_", " ") for row in rows]
    heights = [float(row["normalised"]) for row in rows]
    colours = ["tab:green" if row.get("held") else "tab:red" for row in rows]
    bars = axes.bar(labels, heights, color=colours)
    for bar, row in zip(bars, rows, strict=True):
        axes.annotate(
            f"{float(row['metric']):.3g}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize="small",
        )
    axes.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    axes.axhline(0.0, color="grey", linewidth=1)
    axes.set_ylabel("metric, 0 = everything ablated, 1 = full model")
    axes.set_title(f"Ablation controls ({result.ablation} ablation, {result.metric})")
    axes.tick_params(axis="x", labelsize="small")
    figure.tight_layout()
    return _save(figure, stem)


def write_validation_plots(doc: CircuitDocument, json_path: Path) -> list[Path]:
    """Draw the latest curve and control table of ``doc`` beside ``json_path``.

    Files are named ``<json stem>.<chart>.<ablation>.png|svg`` so validations under
    different ablations do not overwrite each other. Returns the files written.
    """
    written: list[Path] = []
    ablations = sorted({r.ablation for r in doc.validation})
    for ablation in ablations:
        curve = latest_result(doc, FAITHFULNESS_CURVE, ablation=ablation)
        if curve is not None:
            stem = json_path.with_name(f"{json_path.stem}.curve.{ablation}")
            written += plot_faithfulness_curve(curve, stem)
        controls = latest_result(doc, ABLATION_CONTROLS, ablation=ablation)
        if controls is not None:
            stem = json_path.with_name(f"{json_path.stem}.controls.{ablation}")
            written += plot_ablation_controls(controls, stem)
    return written


def _require(result: ValidationResult, name: str, keys: tuple[str, ...]) -> None:
    if result.name != name:
        raise ValueError(f"expected a {name!r} result, got {result.name!r}")
    missing = [k for k in keys if k not in result.values]
    if missing:
        raise ValueError(f"{name} result lacks values {missing}")


def _save(figure: Figure, stem: Path) -> list[Path]:
    FigureCanvasAgg(figure)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(f"{stem.name}.{fmt}") for fmt in FORMATS]
    for path in paths:
        figure.savefig(path, format=path.suffix[1:])
    return paths
