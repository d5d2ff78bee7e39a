"""Completeness (Wang et al. 2022): the circuit and the model respond alike to knockouts.

For a set K of the circuit's components, compare the circuit without K, ``F(C \\ K)``, with
the full model without K, ``F(M \\ K)`` (both as faithfulness, K's edges ablated). If the
circuit left out a component that does the same job as one in K (a backup head), the model
without K still has it and the two numbers part. The incompleteness of K is
``|F(C \\ K) - F(M \\ K)|``; K is sampled (every non-empty subset when there are few), and
all ``2 * len(K sets)`` interventions are one stacked evaluation.
"""

from __future__ import annotations

import itertools
import random

import torch

from circuitreg.schema import ValidationResult
from circuitreg.services.analysis.results import COMPLETENESS

from .base import MaskEvaluator, ValidationConfig, ValidationError, evaluate_with_anchors
from .circuit import inner_components, knockout_mask, without_components


def knockout_sets(components: list[str], n_sets: int, seed: int) -> list[list[str]]:
    """``n_sets`` distinct non-empty subsets: all of them when there are at most that many,
    else random ones whose size is drawn uniformly first (so small and large sets both
    appear, unlike uniform subsets that cluster at half the size)."""
    if not components:
        raise ValidationError("the circuit has no heads or MLPs to knock out")
    if len(components) < 31 and 2 ** len(components) - 1 <= n_sets:
        return [
            list(subset)
            for size in range(1, len(components) + 1)
            for subset in itertools.combinations(components, size)
        ]
    rng = random.Random(seed)
    seen: set[tuple[str, ...]] = set()
    sets: list[list[str]] = []
    while len(sets) < n_sets:
        size = rng.randint(1, len(components))
        subset = tuple(sorted(rng.sample(components, size), key=components.index))
        if subset not in seen:
            seen.add(subset)
            sets.append(list(subset))
    return sets


def completeness(
    evaluator: MaskEvaluator, mask: torch.Tensor, config: ValidationConfig
) -> ValidationResult:
    """Incompleteness over sampled knockout sets; passes when the largest is within tolerance."""
    graph = evaluator.graph
    mask = mask.bool().cpu()
    sets = knockout_sets(inner_components(graph, mask), config.n_knockouts, config.seed)
    circuit_masks = [without_components(graph, mask, k) for k in sets]
    model_masks = [knockout_mask(graph, k) for k in sets]
    anchors, values = evaluate_with_anchors(evaluator, circuit_masks + model_masks)
    f_circuit = [anchors.normalise(v) for v in values[: len(sets)]]
    f_model = [anchors.normalise(v) for v in values[len(sets) :]]
    gaps = [abs(c - m) for c, m in zip(f_circuit, f_model, strict=True)]
    return ValidationResult(
        name=COMPLETENESS,
        ablation=evaluator.ablation,
        metric=evaluator.metric_name,
        corruption=evaluator.corruption,
        values={
            "knockouts": [
                {"components": k, "circuit": c, "model": m, "gap": g}
                for k, c, m, g in zip(sets, f_circuit, f_model, gaps, strict=True)
            ],
            "mean_gap": sum(gaps) / len(gaps),
            "max_gap": max(gaps),
            "tolerance": config.completeness_tolerance,
        },
        passed=max(gaps) <= config.completeness_tolerance,
    )
