"""The ablation control table: four interventions with a known expected outcome.

1. ``circuit_only``: the circuit's edges clean, every other edge ablated (edge level, this is
   the faithfulness circuit). Expected: the behaviour is kept.
2. ``circuit_ablated``: the circuit's edges ablated, every other edge clean. Expected: the
   behaviour is gone.
3. ``outside_ablated``: every component outside the circuit knocked out (all edges leaving
   it ablated) while every edge among the circuit's components stays clean, including ones
   the circuit did not select (node level). Expected: the behaviour is kept.
4. ``random_ablated``: a random edge set of the circuit's size, drawn from the edges outside
   it, ablated (the mean over several draws). Expected: only a small drop, and a smaller one
   than ablating the circuit.

All rows, with the full and empty anchors, are one stacked evaluation. Faithfulness and
fidelity come out of the same numbers, so ``validate`` derives them from this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from circuitreg.schema import ValidationResult
from circuitreg.services.analysis.results import ABLATION_CONTROLS

from .base import Anchors, MaskEvaluator, ValidationConfig, ValidationError, evaluate_with_anchors
from .circuit import inner_components, knockout_mask


@dataclass(frozen=True)
class ControlMeasurement:
    """The raw numbers behind the table (and behind faithfulness and fidelity)."""

    anchors: Anchors
    circuit_only: float
    circuit_ablated: float
    outside_ablated: float
    random_ablated: list[float]


def measure_controls(
    evaluator: MaskEvaluator, mask: torch.Tensor, config: ValidationConfig
) -> ControlMeasurement:
    """Evaluate all control interventions in one stacked evaluation."""
    graph = evaluator.graph
    mask = mask.bool().cpu()
    size = int(mask.sum())
    if size == 0:
        raise ValidationError("the circuit has no edges; there is nothing to validate")
    outside_edges = torch.nonzero(~mask).flatten()
    generator = torch.Generator().manual_seed(config.seed)
    random_masks = []
    for _ in range(config.n_random):
        # When the circuit holds more than half the graph, the random set has to overlap it.
        pool = outside_edges if len(outside_edges) >= size else torch.arange(graph.n_edges)
        chosen = pool[torch.randperm(len(pool), generator=generator)[:size]]
        ablated = torch.ones(graph.n_edges, dtype=torch.bool)
        ablated[chosen] = False
        random_masks.append(ablated)
    keep = set(inner_components(graph, mask))
    outside = [n for n in graph.writers if n not in keep and n != "input"]
    anchors, values = evaluate_with_anchors(
        evaluator, [mask, ~mask, knockout_mask(graph, outside), *random_masks]
    )
    return ControlMeasurement(anchors, values[0], values[1], values[2], values[3:])


def controls_result(
    evaluator: MaskEvaluator, measured: ControlMeasurement, config: ValidationConfig
) -> ValidationResult:
    """The four-row control table as a ``ValidationResult``."""
    norm = measured.anchors.normalise
    random_mean = sum(measured.random_ablated) / len(measured.random_ablated)
    circuit_drop = 1 - norm(measured.circuit_ablated)
    random_drop = 1 - norm(random_mean)
    rows: list[dict[str, Any]] = [
        _row(
            "circuit_only",
            "only the circuit's edges kept",
            measured.circuit_only,
            norm(measured.circuit_only),
            f"behaviour kept (>= {config.faithfulness_min})",
            norm(measured.circuit_only) >= config.faithfulness_min,
        ),
        _row(
            "circuit_ablated",
            "only the circuit's edges ablated",
            measured.circuit_ablated,
            norm(measured.circuit_ablated),
            f"behaviour gone (<= {config.gone_max})",
            norm(measured.circuit_ablated) <= config.gone_max,
        ),
        _row(
            "outside_ablated",
            "every component outside the circuit knocked out",
            measured.outside_ablated,
            norm(measured.outside_ablated),
            f"behaviour kept (>= {config.faithfulness_min})",
            norm(measured.outside_ablated) >= config.faithfulness_min,
        ),
        _row(
            "random_ablated",
            f"a random same-size edge set ablated (mean of {len(measured.random_ablated)})",
            random_mean,
            norm(random_mean),
            f"small drop (<= {config.random_drop_max}, and below the circuit's)",
            random_drop <= config.random_drop_max and random_drop < circuit_drop,
        ),
    ]
    rows[-1]["draws"] = [norm(v) for v in measured.random_ablated]
    return ValidationResult(
        name=ABLATION_CONTROLS,
        ablation=evaluator.ablation,
        metric=evaluator.metric_name,
        corruption=evaluator.corruption,
        values={
            "rows": rows,
            "m_full": measured.anchors.full,
            "m_empty": measured.anchors.empty,
            "config": config.to_dict(),
        },
        passed=all(row["held"] for row in rows),
    )


def ablation_controls(
    evaluator: MaskEvaluator, mask: torch.Tensor, config: ValidationConfig
) -> ValidationResult:
    """Measure and judge the four control rows for the circuit ``mask``."""
    return controls_result(evaluator, measure_controls(evaluator, mask, config), config)


def _row(
    name: str, description: str, metric: float, normalised: float, expectation: str, held: bool
) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "metric": metric,
        "normalised": normalised,
        "expectation": expectation,
        "held": bool(held),
    }
