"""Validation on a tiny model with a planted path: faithfulness, curve, controls, minimality,
completeness, fidelity, and the ``validate`` entry point under every ablation."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
import torch

from circuitreg.schema import CircuitDocument, ModelRef
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.base import to_document
from circuitreg.workers.methods.eap import EAPConfig, eap
from circuitreg.workers.methods.selection import Selection
from circuitreg.workers.tasks.base import TaskData
from circuitreg.workers.validation import (
    CURVE_PERCENTAGES,
    EngineEvaluator,
    ValidationConfig,
    ValidationError,
    ablation_controls,
    completeness,
    faithfulness,
    faithfulness_curve,
    minimality,
    validate,
)
from circuitreg.workers.validation.circuit import circuit_mask, edge_scores
from circuitreg.workers.validation.orientation import helpful_scores

from .validation_planted import (
    IDLE_HEAD,
    PLANTED,
    circuit_document,
    planted_model,
    planted_task,
    true_edges,
)


@pytest.fixture(scope="module")
def setup() -> tuple[Any, TaskData, ComputationalGraph]:
    model = planted_model()
    return model, planted_task(model), ComputationalGraph.from_model(model)


@pytest.fixture(scope="module")
def evaluator(setup: tuple[Any, TaskData, ComputationalGraph]) -> EngineEvaluator:
    model, task, graph = setup
    return EngineEvaluator(model, task, graph, "resample", "logit_diff")


@pytest.fixture(scope="module")
def true_results(setup: tuple[Any, TaskData, ComputationalGraph]) -> dict[str, Any]:
    """``validate`` of the planted circuit, resample ablation and logit difference."""
    model, task, graph = setup
    return by_name(validate(model, task, graph, circuit_document(graph, true_edges(graph))))


def by_name(results: tuple[Any, ...]) -> dict[str, Any]:
    return {r.name: r for r in results}


def test_all_edges_are_fully_faithful_and_no_edges_not_at_all(evaluator: EngineEvaluator) -> None:
    graph = evaluator.graph
    config = ValidationConfig()
    everything = faithfulness(evaluator, torch.ones(graph.n_edges, dtype=torch.bool), config)
    nothing = faithfulness(evaluator, torch.zeros(graph.n_edges, dtype=torch.bool), config)
    assert everything.values["faithfulness"] == pytest.approx(1.0, abs=1e-6)
    assert nothing.values["faithfulness"] == pytest.approx(0.0, abs=1e-6)
    assert everything.passed and not nothing.passed
    # the anchors are the model's own behaviour: clean beats corrupted on this task
    assert everything.values["m_full"] > everything.values["m_empty"]


def test_planted_circuit_is_faithful_and_a_random_one_is_not(
    setup: tuple[Any, TaskData, ComputationalGraph], true_results: dict[str, Any]
) -> None:
    model, task, graph = setup
    true = true_edges(graph)
    results = true_results
    assert results["faithfulness"].values["faithfulness"] >= 0.9
    assert results["fidelity"].values["fidelity"] >= 0.9

    others = [e for e in graph.edges if e not in true]
    random_doc = circuit_document(graph, random.Random(3).sample(others, len(true)))
    random_results = by_name(validate(model, task, graph, random_doc))
    random_f = random_results["faithfulness"].values["faithfulness"]
    assert random_f < 0.5
    assert results["faithfulness"].values["faithfulness"] - random_f > 0.5


def test_control_rows_come_out_as_expected(
    setup: tuple[Any, TaskData, ComputationalGraph], true_results: dict[str, Any]
) -> None:
    model, task, graph = setup
    controls = true_results["ablation_controls"]
    rows = {row["name"]: row for row in controls.values["rows"]}
    assert list(rows) == ["circuit_only", "circuit_ablated", "outside_ablated", "random_ablated"]
    assert rows["circuit_only"]["normalised"] >= 0.9
    assert rows["circuit_ablated"]["normalised"] <= 0.1
    assert rows["outside_ablated"]["normalised"] >= 0.9
    assert rows["random_ablated"]["normalised"] >= 0.9
    assert all(row["held"] for row in rows.values())
    assert controls.passed is True

    # a circuit missing the planted layer-1 head: keeping it alone loses the behaviour
    partial = [e for e in true_edges(graph) if "a1.h2" not in e]
    weak = ablation_controls(
        EngineEvaluator(model, task, graph), graph.mask_from_edges(partial), ValidationConfig()
    )
    weak_rows = {row["name"]: row for row in weak.values["rows"]}
    assert weak_rows["circuit_only"]["held"] is False
    assert weak.passed is False


def test_curve_is_one_stacked_evaluation_with_mib_areas(
    setup: tuple[Any, TaskData, ComputationalGraph],
) -> None:
    model, task, graph = setup
    scores = eap(model, task, graph, EAPConfig()).edge_scores
    evaluator = EngineEvaluator(model, task, graph, "resample", "logit_diff")
    evaluator.engine.clean_metric()  # prepare the cached example batches
    forwards_before = evaluator.engine.n_forward
    curve = faithfulness_curve(evaluator, scores)
    assert evaluator.n_evaluations == 1
    # 22 masks in as few stacked passes as the engine holds (on the CPU it caps a pass's
    # size by the cache, CPU_PASS_ELEMENTS; elsewhere all 22 go in one pass)
    per_pass = evaluator.engine.max_sets_per_pass
    assert per_pass >= 8
    assert evaluator.engine.n_forward - forwards_before == math.ceil(22 / per_pass)

    values = curve.values
    assert values["percentages"] == list(CURVE_PERCENTAGES)
    n_true = len(true_edges(graph))
    for key in ("faithfulness_signed", "faithfulness_abs"):
        assert values[key][-1] == pytest.approx(1.0, abs=1e-6)  # 100 %: the full model
        assert values[key][0] == pytest.approx(0.0, abs=1e-6)  # 0.1 % of 81 edges: none
    # by |EAP score| the true edges come first; once the circuit holds them all it is exact
    for requested, f in zip(values["n_edges_requested"], values["faithfulness_abs"], strict=True):
        if requested >= n_true:
            assert f == pytest.approx(1.0, abs=1e-5)
    # MIB's areas: trapezoids over the fraction of edges, signed ranking for CPR and the
    # distance from 1 of the absolute ranking for CMD
    x = [p / 100 for p in CURVE_PERCENTAGES]
    cpr = cmd = 0.0
    for i in range(len(x) - 1):
        f1, f2 = values["faithfulness_signed"][i : i + 2]
        cpr += (x[i + 1] - x[i]) * (f1 + f2) / 2
        g1, g2 = (abs(1 - f) for f in values["faithfulness_abs"][i : i + 2])
        cmd += (x[i + 1] - x[i]) * (g1 + g2) / 2
    assert values["cpr"] == pytest.approx(cpr)
    assert values["cmd"] == pytest.approx(cmd)

    noise = torch.randn(graph.n_edges, generator=torch.Generator().manual_seed(0))
    random_curve = faithfulness_curve(evaluator, noise)
    assert values["cmd"] < random_curve.values["cmd"]


def test_minimality_finds_a_deliberately_added_redundant_component(
    evaluator: EngineEvaluator,
) -> None:
    graph = evaluator.graph
    padded = [
        *true_edges(graph),
        f"input->{IDLE_HEAD}<q>",
        f"{IDLE_HEAD}->a1.h2<k>",
        f"{IDLE_HEAD}->logits",
    ]
    mask = graph.mask_from_edges(padded)
    result = minimality(evaluator, mask, ValidationConfig())
    assert result.values["redundant"] == [IDLE_HEAD]
    assert result.values["minimal_components"] == list(PLANTED)
    assert sorted(result.values["minimal_edges"]) == sorted(true_edges(graph))
    assert result.passed is False
    for head in PLANTED:
        assert abs(result.values["effects"][head]) > 0.5

    tight = minimality(evaluator, graph.mask_from_edges(true_edges(graph)), ValidationConfig())
    assert tight.values["redundant"] == [] and tight.passed is True


def test_completeness_tells_a_complete_circuit_from_one_missing_a_path(
    evaluator: EngineEvaluator,
) -> None:
    graph = evaluator.graph
    config = ValidationConfig()
    complete = completeness(evaluator, graph.mask_from_edges(true_edges(graph)), config)
    assert complete.values["max_gap"] == pytest.approx(0.0, abs=1e-5)
    assert complete.passed is True
    # every non-empty subset of the two heads was knocked out
    assert sorted(map(tuple, (k["components"] for k in complete.values["knockouts"]))) == sorted(
        [("a0.h1",), ("a1.h2",), ("a0.h1", "a1.h2")]
    )

    # a model with a backup copy of a0.h1 in a0.h2, and a circuit that leaves the copy out:
    # knocking a0.h1 out of the model leaves the copy working, while the circuit loses it
    backup_model = planted_model(backup="a0.h2")
    backup_task = planted_task(backup_model)
    backup_eval = EngineEvaluator(backup_model, backup_task, graph, "resample", "logit_diff")
    with_copy = graph.mask_from_edges(true_edges(graph, extra=("a0.h2",)))
    assert completeness(backup_eval, with_copy, config).values["max_gap"] < 1e-5
    incomplete = completeness(backup_eval, graph.mask_from_edges(true_edges(graph)), config)
    assert incomplete.values["max_gap"] > config.completeness_tolerance
    assert incomplete.passed is False


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_validate_under_each_ablation_records_it(
    setup: tuple[Any, TaskData, ComputationalGraph], ablation: str
) -> None:
    model, task, graph = setup
    doc = circuit_document(graph, true_edges(graph))
    results = validate(model, task, graph, doc, ablation=ablation, metric="prob")
    names = [r.name for r in results]
    assert names == [
        "faithfulness",
        "fidelity",
        "ablation_controls",
        "minimality",
        "completeness",
        "suffix_ablation",
    ]  # no curve: this document carries no scores
    assert all(r.ablation == ablation and r.metric == "prob" for r in results)
    assert by_name(results)["faithfulness"].values["faithfulness"] == pytest.approx(1.0, abs=1e-5)


def test_results_attach_and_survive_revalidation(
    setup: tuple[Any, TaskData, ComputationalGraph],
) -> None:
    model, task, graph = setup
    scores = eap(model, task, graph, EAPConfig()).edge_scores.tolist()
    doc = circuit_document(graph, true_edges(graph), dict(zip(graph.edges, scores, strict=True)))
    light = ValidationConfig(n_random=2, n_knockouts=3)
    once = doc.with_validation(*validate(model, task, graph, doc, "resample", config=light))
    twice = once.with_validation(*validate(model, task, graph, once, "zero", config=light))
    again = CircuitDocument.from_json(twice.to_json())
    assert again.id == doc.id
    assert {(r.name, r.ablation) for r in again.validation} >= {
        ("faithfulness_curve", "resample"),
        ("faithfulness_curve", "zero"),
        ("faithfulness", "resample"),
        ("faithfulness", "zero"),
    }
    assert circuit_mask(again, graph).sum() == len(true_edges(graph))


def test_bad_circuits_are_refused_with_the_reason(
    setup: tuple[Any, TaskData, ComputationalGraph],
) -> None:
    model, task, graph = setup
    with pytest.raises(ValidationError, match="has no edges in the circuit"):
        validate(model, task, graph, circuit_document(graph, []))
    wider = ComputationalGraph(n_layers=2, n_heads=8, attn_only=True)
    with pytest.raises(ValidationError, match="the model given has 2 layers x 8 heads"):
        validate(model, task, wider, circuit_document(graph, true_edges(graph)))
    same = TaskData(
        name="same",
        spec={},
        clean=task.clean,
        corrupted=task.clean,
        positions=task.positions,
        answers=task.answers,
        distractors=task.distractors,
        corruption="none",
    )
    with pytest.raises(ValidationError, match="faithfulness is undefined"):
        validate(model, same, graph, circuit_document(graph, true_edges(graph)))


def test_a_circuit_without_heads_skips_minimality_and_completeness(
    setup: tuple[Any, TaskData, ComputationalGraph],
) -> None:
    model, task, graph = setup
    direct = validate(model, task, graph, circuit_document(graph, ["input->logits"]))
    names = [r.name for r in direct]
    assert names == ["faithfulness", "fidelity", "ablation_controls", "suffix_ablation"]
    # no heads to ablate: the suffix check's changes are 0 by definition, with no verdict
    suffix = by_name(direct)["suffix_ablation"]
    assert suffix.values["circuit"]["mean"] == 0.0 and suffix.passed is None
    # the planted heads carry the behaviour, so the direct path alone is far from faithful
    assert by_name(direct)["faithfulness"].values["faithfulness"] < 0.5


def test_curve_ranks_ablation_effects_by_their_helpful_sign(
    setup: tuple[Any, TaskData, ComputationalGraph], evaluator: EngineEvaluator
) -> None:
    model, task, graph = setup
    result = eap(model, task, graph, EAPConfig())
    ref = ModelRef(name="planted", n_layers=graph.n_layers, n_heads=graph.n_heads)
    doc = to_document(result, graph, Selection("top_k", 12), ref, task)
    helpful, why = helpful_scores(doc, edge_scores(doc, graph))
    assert "negated" in why  # EAP reports the logit difference's change when ablated
    oriented = faithfulness_curve(evaluator, helpful, orientation=why)
    raw = faithfulness_curve(evaluator, result.edge_scores)
    assert oriented.values["score_orientation"] == why
    assert oriented.values["cpr"] > raw.values["cpr"] + 0.2
    assert oriented.values["cmd"] == pytest.approx(raw.values["cmd"])  # |score| is unsigned
