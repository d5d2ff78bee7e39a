"""Minimality: which of the circuit's components it could do without.

Each head or MLP of the circuit is removed in turn (every circuit edge into or out of it
ablated) and the change in faithfulness is measured; all single removals are one stacked
evaluation. A component whose removal changes faithfulness by at most the tolerance is
redundant. Redundant components may only be redundant one at a time (two heads that back
each other up), so the minimal circuit is found with a second stacked evaluation: remove the
redundant components cumulatively, least effect first, and keep the longest prefix whose
every step stays within the tolerance of the whole circuit.
"""

from __future__ import annotations

import torch

from circuitreg.schema import ValidationResult
from circuitreg.services.analysis.results import MINIMALITY

from .base import MaskEvaluator, ValidationConfig, ValidationError, evaluate_with_anchors
from .circuit import inner_components, without_components


def minimality(
    evaluator: MaskEvaluator, mask: torch.Tensor, config: ValidationConfig
) -> ValidationResult:
    """Per-component effects, the redundant components and the minimal circuit left."""
    graph = evaluator.graph
    mask = mask.bool().cpu()
    components = inner_components(graph, mask)
    if not components:
        raise ValidationError("the circuit has no heads or MLPs to test for minimality")
    singles = [without_components(graph, mask, [c]) for c in components]
    anchors, values = evaluate_with_anchors(evaluator, [mask, *singles])
    f_circuit = anchors.normalise(values[0])
    effects = {
        c: f_circuit - anchors.normalise(v) for c, v in zip(components, values[1:], strict=True)
    }
    tolerance = config.minimality_tolerance
    redundant = sorted(
        (c for c, e in effects.items() if abs(e) <= tolerance), key=lambda c: abs(effects[c])
    )

    removed: list[str] = []
    prefix_faithfulness: list[float] = []
    if redundant:
        prefixes = [
            without_components(graph, mask, redundant[: k + 1]) for k in range(len(redundant))
        ]
        _, prefix_values = evaluate_with_anchors(evaluator, prefixes)
        prefix_faithfulness = [anchors.normalise(v) for v in prefix_values]
        for component, f in zip(redundant, prefix_faithfulness, strict=True):
            if abs(f_circuit - f) > tolerance:
                break
            removed.append(component)
    minimal_mask = without_components(graph, mask, removed)
    minimal = [c for c in components if c not in removed]
    return ValidationResult(
        name=MINIMALITY,
        ablation=evaluator.ablation,
        metric=evaluator.metric_name,
        corruption=evaluator.corruption,
        values={
            "tolerance": tolerance,
            "faithfulness": f_circuit,
            "effects": effects,
            "redundant": redundant,
            "removal_order_faithfulness": prefix_faithfulness,
            "minimal_components": minimal,
            "minimal_edges": graph.edges_from_mask(minimal_mask),
            "minimal_faithfulness": prefix_faithfulness[len(removed) - 1] if removed else f_circuit,
            "n_components": len(components),
        },
        passed=not redundant,
    )
