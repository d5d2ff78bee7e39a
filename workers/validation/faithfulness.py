"""Faithfulness (MIB), its curve with CPR and CMD, and fidelity.

* Faithfulness, as MIB defines it: ``f(C) = (m(C) - m(empty)) / (m(M) - m(empty))``: keep the
  circuit's edges clean, ablate all others, and place the metric between the fully ablated
  model (0) and the full model (1).
* The faithfulness curve: circuits made of the top 0.1, 0.2, ..., 100 percent of the edges.
  MIB ranks by signed score for CPR (area under the curve, higher is better) and by absolute
  score for CMD (area between the curve and 1, lower is better); both areas are trapezoids
  over the fraction of edges kept, exactly as MIB's ``evaluate_area_under_curve``. Dangling
  edges are pruned from each top-n circuit, as MIB does. All twenty circuits, with the full
  and empty ones, are one stacked evaluation.
* Fidelity, as the product brief writes it: ``(m(M) - m(M without C)) / (m(M) - m(empty))``,
  the share of the behaviour that goes away when only the circuit is ablated.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from circuitreg.schema import ValidationResult
from circuitreg.services.analysis.results import FAITHFULNESS, FAITHFULNESS_CURVE, FIDELITY
from circuitreg.workers.graph import ComputationalGraph

from .base import (
    GapCheck,
    MaskEvaluator,
    ValidationConfig,
    ValidationError,
    evaluate_with_anchors,
    measure_gap,
)

CURVE_PERCENTAGES: tuple[float, ...] = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)


def faithfulness(
    evaluator: MaskEvaluator, mask: torch.Tensor, config: ValidationConfig
) -> ValidationResult:
    """MIB faithfulness of the circuit ``mask`` (one evaluation: full, empty, circuit)."""
    anchors, (m_circuit,) = evaluate_with_anchors(evaluator, [mask])
    gap = measure_gap(evaluator)
    return faithfulness_result(
        evaluator, mask, anchors.full, anchors.empty, m_circuit, config, gap=gap
    )


def _normalised(
    name: str, value: float, threshold: float, gap: GapCheck | None
) -> tuple[dict[str, Any], bool | None]:
    """``{name: value, gap...}`` and ``passed``, or ``{name: None, undefined: reason}``."""
    if gap is None:
        return {name: value}, value >= threshold
    if gap.within_noise:
        return {name: None, "undefined": gap.reason, **gap.to_values()}, None
    return {name: value, **gap.to_values()}, value >= threshold


def faithfulness_result(
    evaluator: MaskEvaluator,
    mask: torch.Tensor,
    m_full: float,
    m_empty: float,
    m_circuit: float,
    config: ValidationConfig,
    *,
    gap: GapCheck | None = None,
) -> ValidationResult:
    """The faithfulness result from already measured metric values.

    With ``gap`` (see ``GapCheck``) the result carries the gap it was normalised by, and is
    undefined (value None, ``passed`` None, the reason under ``undefined``) when the gap is
    within noise.
    """
    value = (m_circuit - m_empty) / (m_full - m_empty)
    figures, passed = _normalised(FAITHFULNESS, value, config.faithfulness_min, gap)
    return ValidationResult(
        name=FAITHFULNESS,
        ablation=evaluator.ablation,
        metric=evaluator.metric_name,
        corruption=evaluator.corruption,
        values={
            **figures,
            "m_circuit": m_circuit,
            "m_full": m_full,
            "m_empty": m_empty,
            "n_edges": int(mask.sum()),
            "n_total_edges": evaluator.graph.n_edges,
            "threshold": config.faithfulness_min,
        },
        passed=passed,
    )


def fidelity(
    evaluator: MaskEvaluator, mask: torch.Tensor, config: ValidationConfig
) -> ValidationResult:
    """Fidelity of the circuit ``mask``: one evaluation of full, empty and model-minus-circuit."""
    anchors, (ablated,) = evaluate_with_anchors(evaluator, [~mask.bool()])
    gap = measure_gap(evaluator)
    return fidelity_result(evaluator, anchors.full, anchors.empty, ablated, config, gap=gap)


def fidelity_result(
    evaluator: MaskEvaluator,
    baseline: float,
    everything_ablated: float,
    circuit_ablated: float,
    config: ValidationConfig,
    *,
    gap: GapCheck | None = None,
) -> ValidationResult:
    """The fidelity result from already measured metric values (``gap`` as faithfulness)."""
    value = (baseline - circuit_ablated) / (baseline - everything_ablated)
    figures, passed = _normalised(FIDELITY, value, config.fidelity_min, gap)
    return ValidationResult(
        name=FIDELITY,
        ablation=evaluator.ablation,
        metric=evaluator.metric_name,
        corruption=evaluator.corruption,
        values={
            **figures,
            "baseline": baseline,
            "circuit_ablated": circuit_ablated,
            "everything_ablated": everything_ablated,
            "threshold": config.fidelity_min,
        },
        passed=passed,
    )


def top_n_count(percentage: float, n_edges: int) -> int:
    """Edges in a top-``percentage`` circuit: ``int(pct * n)`` as MIB, safe from 0.29999."""
    return min(n_edges, math.floor(percentage * n_edges / 100 + 1e-9))


def top_n_mask(
    scores: torch.Tensor, graph: ComputationalGraph, n: int, *, absolute: bool
) -> torch.Tensor:
    """The ``n`` best edges (unscored edges last, ties by graph order), dangling pruned."""
    ranking = scores.abs() if absolute else scores.clone()
    ranking = torch.nan_to_num(ranking.double(), nan=-math.inf)
    order = torch.sort(ranking, descending=True, stable=True).indices
    mask = torch.zeros(graph.n_edges, dtype=torch.bool)
    mask[order[:n]] = True
    return graph.prune_dangling(mask)


def trapezoid_area(xs: list[float], ys: list[float]) -> float:
    """Trapezoidal area of ``ys`` over ``xs`` (the rule MIB's CPR and CMD use)."""
    if len(xs) != len(ys):
        raise ValidationError(f"{len(xs)} x values but {len(ys)} y values")
    return float(np.trapezoid(ys, xs))


def faithfulness_curve(
    evaluator: MaskEvaluator,
    scores: torch.Tensor,
    percentages: tuple[float, ...] = CURVE_PERCENTAGES,
    orientation: str = "positive score helps",
) -> ValidationResult:
    """The faithfulness curve, CPR and CMD of a scored graph, in one stacked evaluation.

    ``scores`` must be oriented so that positive helps the behaviour (see ``orientation``
    for methods that report ablation effects); ``orientation`` is recorded with the result.
    """
    graph = evaluator.graph
    graph.check_edge_vector(scores)
    if bool(torch.isnan(scores).all()):
        raise ValidationError("the circuit carries no edge scores, so it has no curve")
    if any(not 0 < p <= 100 for p in percentages) or list(percentages) != sorted(percentages):
        raise ValidationError(f"curve percentages must rise within (0, 100], got {percentages}")
    counts = [top_n_count(p, graph.n_edges) for p in percentages]
    signed = [top_n_mask(scores, graph, n, absolute=False) for n in counts]
    absolute = [top_n_mask(scores, graph, n, absolute=True) for n in counts]
    anchors, values = evaluate_with_anchors(evaluator, signed + absolute)
    f_signed = [anchors.normalise(v) for v in values[: len(counts)]]
    f_abs = [anchors.normalise(v) for v in values[len(counts) :]]
    fractions = [p / 100 for p in percentages]
    return ValidationResult(
        name=FAITHFULNESS_CURVE,
        ablation=evaluator.ablation,
        metric=evaluator.metric_name,
        corruption=evaluator.corruption,
        values={
            "percentages": list(percentages),
            "n_edges_requested": counts,
            "n_edges_signed": [int(m.sum()) for m in signed],
            "n_edges_abs": [int(m.sum()) for m in absolute],
            "faithfulness_signed": f_signed,
            "faithfulness_abs": f_abs,
            "metric_signed": values[: len(counts)],
            "metric_abs": values[len(counts) :],
            "m_full": anchors.full,
            "m_empty": anchors.empty,
            "cpr": trapezoid_area(fractions, f_signed),
            "cmd": trapezoid_area(fractions, [abs(1 - f) for f in f_abs]),
            "n_total_edges": graph.n_edges,
            "n_scored_edges": int((~torch.isnan(scores)).sum()),
            "score_orientation": orientation,
        },
        passed=None,
    )
