"""Stability: a method re-run on resampled data finds the planted circuit every time."""

from __future__ import annotations

import pytest

from circuitreg.schema import ModelRef
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.base import MethodConfig, ScoreResult, to_document
from circuitreg.workers.methods.eap import EAPConfig, eap
from circuitreg.workers.methods.selection import Selection
from circuitreg.workers.tasks.base import TaskData
from circuitreg.workers.validation import ValidationError, stability, validate_stability

from .validation_planted import planted_model, planted_task, true_edges


def test_stability_of_an_eap_circuit_on_bootstrap_resamples() -> None:
    model = planted_model()
    task = planted_task(model)
    graph = ComputationalGraph.from_model(model)
    true = true_edges(graph)
    result = eap(model, task, graph, EAPConfig())
    doc = to_document(result, graph, Selection("top_k", len(true)), _ref(graph), task)
    assert sorted(e.name for e in doc.circuit_edges()) == sorted(true)

    measured = validate_stability(model, task, graph, doc, n_runs=3)
    values = measured.values
    assert values["n_runs"] == 3 and values["varied"] == ["dataset"]
    assert values["stable_fraction"] == 1.0
    assert all(values["frequencies"][e] == 1.0 for e in true)
    assert values["mean_pairwise_jaccard"] == 1.0
    assert measured.passed is True

    # judged against edges the method never picks, nothing is stable
    calls: list[int] = []

    def run(run_task: TaskData, config: MethodConfig) -> ScoreResult:
        calls.append(run_task.n_examples)
        return eap(model, run_task, graph, EAPConfig())

    others = graph.mask_from_edges([e for e in graph.edges if e not in true][: len(true)])
    unstable = stability(
        run, task, graph, EAPConfig(), Selection("top_k", len(true)), n_runs=2, reference=others
    )
    assert unstable.values["stable_fraction"] == 0.0 and unstable.passed is False
    assert calls == [task.n_examples, task.n_examples]


def test_identical_runs_are_refused() -> None:
    graph = ComputationalGraph(n_layers=1, n_heads=1, attn_only=True)

    def never(run_task: TaskData, config: MethodConfig) -> ScoreResult:
        raise AssertionError("must not run")

    with pytest.raises(ValidationError, match="every run would be the same"):
        stability(never, None, graph, EAPConfig(), Selection(), resample=False)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="at least 2 runs"):
        stability(never, None, graph, EAPConfig(), Selection(), n_runs=1)  # type: ignore[arg-type]


def _ref(graph: ComputationalGraph) -> ModelRef:
    return ModelRef(name="planted", n_layers=graph.n_layers, n_heads=graph.n_heads, attn_only=True)


def test_the_torch_free_orientation_table_matches_the_workers() -> None:
    from circuitreg.services.analysis.orientation import (
        ABLATION_EFFECT_METHODS,
        LOWER_IS_BETTER_METRICS,
    )
    from circuitreg.workers.methods.registry import default_registry
    from circuitreg.workers.metrics import METRICS

    lower = {name for name, metric in METRICS.items() if not metric.higher_is_better}
    assert lower == LOWER_IS_BETTER_METRICS
    assert set(default_registry().names()) >= ABLATION_EFFECT_METHODS
