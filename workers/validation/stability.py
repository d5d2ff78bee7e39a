"""Stability: does a method find the same circuit again under another seed or dataset?

The method is run several times, each with its own seed (when its config has a ``seed``)
and, if asked, on a bootstrap resample of the task's examples. Each run's scores become a
circuit through the same selection; every edge's inclusion frequency across runs is stored,
and the circuit's stable share is the fraction of its edges found in at least ``threshold``
of the runs.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations
from typing import Any

import torch

from circuitreg.schema import ValidationResult
from circuitreg.services.analysis.results import STABILITY
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.base import MethodConfig, ScoreResult
from circuitreg.workers.methods.selection import Selection, select_edges
from circuitreg.workers.metrics import metric_name
from circuitreg.workers.tasks.base import TaskData

from .base import ValidationError

RunMethod = Callable[[TaskData, MethodConfig], ScoreResult]
"""One run of the method on a task with a config (model and graph bound by the caller)."""


def stability(
    run_method: RunMethod,
    task: TaskData,
    graph: ComputationalGraph,
    config: MethodConfig,
    selection: Selection,
    *,
    n_runs: int = 5,
    resample: bool = True,
    reference: torch.Tensor | None = None,
    threshold: float = 0.8,
    stable_min: float = 0.8,
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
) -> ValidationResult:
    """Run the method ``n_runs`` times and measure how often each edge is selected.

    ``reference`` is the circuit judged (a ``[n_edges]`` mask); without it, the edges chosen
    in any run are judged. Passes when the stable share reaches ``stable_min``.
    """
    has_seed = "seed" in type(config).model_fields
    _check_design(config, n_runs, threshold, has_seed=has_seed, resample=resample)
    masks = _rerun(
        run_method, task, graph, config, selection,
        n_runs=n_runs, resample=resample, vary_seed=has_seed, seed=seed, progress=progress,
    )  # fmt: skip
    stacked = torch.stack(masks).double()
    frequency = stacked.mean(0)
    judged = reference.bool().cpu() if reference is not None else stacked.sum(0) > 0
    n_judged = int(judged.sum())
    stable_fraction = (
        float(((frequency >= threshold) & judged).sum()) / n_judged if n_judged else 0.0
    )
    jaccards = [_jaccard(a, b) for a, b in combinations(masks, 2)]
    values: dict[str, Any] = {
        "method": config.method_name,
        "n_runs": n_runs,
        "varied": [*(["seed"] if has_seed else []), *(["dataset"] if resample else [])],
        "selection": selection.to_dict(),
        "frequencies": {
            graph.edges[i]: float(frequency[i]) for i in torch.nonzero(frequency).flatten().tolist()
        },
        "threshold": threshold,
        "stable_fraction": stable_fraction,
        "n_judged_edges": n_judged,
        "mean_pairwise_jaccard": sum(jaccards) / len(jaccards),
        "circuit_sizes": [int(m.sum()) for m in masks],
    }
    return ValidationResult(
        name=STABILITY,
        ablation=config.ablation,
        metric=metric_name(config.metric),
        corruption=task.corruption,
        values=values,
        passed=stable_fraction >= stable_min,
    )


def _check_design(
    config: MethodConfig, n_runs: int, threshold: float, *, has_seed: bool, resample: bool
) -> None:
    """Refuse a design that cannot measure stability: fewer than two runs, a threshold
    outside (0, 1], or runs that nothing varies between (no seed and no resampling)."""
    if n_runs < 2:
        raise ValidationError(f"stability needs at least 2 runs, got {n_runs}")
    if not 0 < threshold <= 1:
        raise ValidationError(f"threshold must be in (0, 1], got {threshold}")
    if not has_seed and not resample:
        raise ValidationError(
            f"method {config.method_name!r} takes no seed, so without resampling the dataset "
            "every run would be the same"
        )


def _rerun(
    run_method: RunMethod,
    task: TaskData,
    graph: ComputationalGraph,
    config: MethodConfig,
    selection: Selection,
    *,
    n_runs: int,
    resample: bool,
    vary_seed: bool,
    seed: int,
    progress: Callable[[float, str], None] | None,
) -> list[torch.Tensor]:
    """The circuit (CPU mask) each of ``n_runs`` runs selects, run ``i`` with seed
    ``seed + i`` and on its own bootstrap resample of the examples, as asked.

    One generator seeded by ``seed`` draws every resample, so the runs are reproducible.
    """
    generator = torch.Generator().manual_seed(seed)
    masks = []
    for run in range(n_runs):
        run_config = config.replaced(seed=seed + run) if vary_seed else config
        run_task = task
        if resample:
            picks = torch.randint(task.n_examples, (task.n_examples,), generator=generator)
            run_task = task.subset(picks.to(task.device))
        result = run_method(run_task, run_config)
        masks.append(select_edges(result.edge_scores, graph, selection).cpu())
        if progress is not None:
            progress((run + 1) / n_runs, f"stability run {run + 1}/{n_runs}")
    return masks


def _jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """Overlap of two circuits (1 for two empty ones: they agree)."""
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union
