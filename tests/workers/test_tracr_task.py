"""The tracr task: RASP answers, resampled corruption, and the engine on the true circuit."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from typer.testing import CliRunner

from circuitreg.cli import app
from circuitreg.workers.engine import InterventionEngine
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.models import load_model
from circuitreg.workers.tasks.base import TaskContext, TaskError
from circuitreg.workers.tasks.registry import build_task
from circuitreg.workers.tasks.tracr_task import tracr_task
from circuitreg.workers.tracr import ground_truth_edges
from circuitreg.workers.tracr.compile import check_fixture
from circuitreg.workers.tracr.fixture import TracrFixture, TracrSample


@pytest.mark.parametrize("program", ["reverse", "frac_prevs", "pair_balance"])
def test_task_answers_are_what_the_compiled_model_outputs(program: str) -> None:
    loaded = load_model(f"tracr:{program}", "cpu")
    fixture = loaded.info["fixture"]
    task = tracr_task(program, n=32, seed=1)
    assert task.clean.shape == (32, fixture.max_seq_len + 1)
    assert bool((task.clean[:, 0] == fixture.bos_id).all())
    assert not torch.equal(task.clean, task.corrupted)
    assert bool((task.distractors != task.answers).all())  # type: ignore[operator]
    with torch.no_grad():
        logits = loaded.bridge(task.clean)
    read = logits.gather(1, task.positions[..., None].expand(-1, -1, logits.shape[-1]))
    if fixture.categorical:
        assert torch.equal(read.argmax(-1), task.answers)
    else:  # numerical: logit 0 is the value, logit 1 a constant zero
        assert float(read[..., 1].abs().max()) == 0.0
    assert tracr_task(program, n=32, seed=1).dataset_hash == task.dataset_hash


def test_shorter_prompts_are_answered_by_the_compiled_model() -> None:
    """``length`` picks samples of that length; the model's answers on them are the task's."""
    loaded = load_model("tracr:reverse", "cpu")
    context = TaskContext.from_loaded(loaded)
    task = build_task("tracr:program=reverse,n=16,length=4", context=context)
    assert task.clean.shape == (16, 5) and task.spec["length"] == 4
    assert "length 4" in task.corruption
    with torch.no_grad():
        logits = loaded.bridge(task.clean)
    read = logits.gather(1, task.positions[..., None].expand(-1, -1, logits.shape[-1]))
    assert torch.equal(read.argmax(-1), task.answers)
    with pytest.raises(TaskError, match="length must be between 1 and 5 for 'reverse', got 9"):
        build_task("tracr:program=reverse,length=9", context=context)
    with pytest.raises(TaskError, match="length an integer or max"):
        build_task("tracr:program=reverse,length=four", context=context)


def test_registry_builds_the_task_from_a_loaded_model() -> None:
    loaded = load_model("tracr:reverse", "cpu")
    context = TaskContext.from_loaded(loaded)
    task = build_task("tracr:reverse", context=context)
    assert task.name == "tracr" and task.spec["program"] == "reverse"
    assert build_task("tracr:program=reverse,n=8", context=context).n_examples == 8
    with pytest.raises(TaskError, match="d_vocab"):
        build_task("tracr:reverse", context=TaskContext(d_vocab=3))
    with pytest.raises(TaskError, match="no built-in tracr program"):
        build_task("tracr:nonesuch", context=context)


@pytest.mark.parametrize(
    ("program", "ablation"),
    [("frac_prevs", "resample"), ("frac_prevs", "zero"), ("pair_balance", "zero")],
)
def test_engine_keeps_the_output_with_only_the_true_edges(program: str, ablation: str) -> None:
    """Ablating every edge outside the ground truth leaves the metric exactly as clean;
    ablating everything does not. (Causal programs: the engine assumes causal attention.)"""
    loaded = load_model(f"tracr:{program}", "cpu")
    task = tracr_task(program, n=48, seed=0)
    graph = ComputationalGraph.from_model(loaded.bridge)
    engine = InterventionEngine(loaded.bridge, graph, task, ablation=ablation)
    truth = set(ground_truth_edges(loaded.info["fixture"]))
    keep = torch.tensor([name in truth for name in graph.edges])
    clean = engine.clean_metric()
    assert float(engine.evaluate_circuits(keep)[0]) == pytest.approx(clean, abs=1e-4)
    assert abs(engine.ablated_metric() - clean) > 1e-2
    if ablation == "zero":  # every true edge carries something: dropping any one matters
        arange = torch.arange(len(keep))
        ordered = sorted(truth)
        rows = torch.stack([keep & (arange != graph.edge_index(e)) for e in ordered])
        values = engine.evaluate_circuits(rows)
        unchanged = [
            e for e, v in zip(ordered, values.tolist(), strict=True) if abs(v - clean) <= 1e-3
        ]
        assert unchanged == []


def test_groundtruth_cli_prints_the_true_edges() -> None:
    result = CliRunner().invoke(app, ["groundtruth", "--model", "tracr:frac_prevs"])
    assert result.exit_code == 0, result.output
    from circuitreg.workers.tracr import load_fixture

    assert result.output.split() == list(ground_truth_edges(load_fixture("frac_prevs")))
    bad = CliRunner().invoke(app, ["groundtruth", "--model", "toy:induction"])
    assert bad.exit_code != 0 and "only for tracr" in bad.output


def _with_undefined_first_output(fixture: TracrFixture) -> TracrFixture:
    """The fixture as if RASP left its first output undefined (None), as ``shift_by`` does."""
    samples = tuple(
        TracrSample(s.inputs, (None, *s.outputs[1:])) for s in fixture.samples
    )  # fmt: skip
    return dataclasses.replace(fixture, samples=samples)


def test_outputs_rasp_leaves_undefined_are_neither_checked_nor_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from circuitreg.workers.tracr import loading

    fixture = _with_undefined_first_output(load_model("tracr:reverse", "cpu").info["fixture"])
    assert fixture.defined_positions(5) == [2, 3, 4, 5]
    assert check_fixture(fixture) == []  # the model's output at position 1 is not compared
    wrong = fixture.samples[0]
    bad = (None, "z", *wrong.outputs[2:])
    flagged = dataclasses.replace(fixture, samples=(TracrSample(wrong.inputs, bad),))
    assert len(check_fixture(flagged)) == 1  # a defined position still is

    monkeypatch.setattr(loading, "resolve_tracr_fixture", lambda spec: fixture)
    task = tracr_task("reverse", n=8, seed=0)
    assert task.positions.tolist() == [[2, 3, 4, 5]] * 8
    assert task.answers.shape == (8, 4)  # the answers at those positions only
    empty = dataclasses.replace(
        fixture, samples=tuple(TracrSample(s.inputs, (None,) * 5) for s in fixture.samples)
    )
    monkeypatch.setattr(loading, "resolve_tracr_fixture", lambda spec: empty)
    with pytest.raises(TaskError, match="defines no output"):
        tracr_task("reverse", n=8)


def test_clean_prompts_are_distinct_and_balanced_over_the_outputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A program whose outputs are nearly always the same (like tracr's Dyck programs, where
    few inputs are balanced) still shows a method its rare outputs: each output is drawn
    equally often, and an input repeats only when its output has no other input left."""
    from circuitreg.workers.tracr import loading

    fixture = load_model("tracr:reverse", "cpu").info["fixture"]
    full = [s for s in fixture.samples if len(s.inputs) == 5]
    common, rare = full[0].outputs, {full[1].inputs, full[2].inputs}
    skewed = dataclasses.replace(fixture, samples=tuple(
        s if s.inputs in rare or s.inputs == full[0].inputs else TracrSample(s.inputs, common)
        for s in full
    ))  # fmt: skip
    distinct_inputs = len({s.inputs for s in full})
    assert distinct_inputs > 40 and len(full) > distinct_inputs  # duplicates are dropped
    monkeypatch.setattr(loading, "resolve_tracr_fixture", lambda spec: skewed)

    task = tracr_task("reverse", n=30, seed=2)
    assert task.spec["balance"] == "outputs" and "each output equally often" in task.corruption
    answers = [tuple(row) for row in task.answers.tolist()]
    assert sorted(answers.count(a) for a in set(answers)) == [10, 10, 10]
    inputs_per_output: dict[tuple[int, ...], set[tuple[int, ...]]] = {}
    for row, answer in zip(task.clean.tolist(), answers, strict=True):
        inputs_per_output.setdefault(answer, set()).add(tuple(row))
    # the common output's 10 draws are 10 inputs; each rare output has only one input
    assert sorted(len(inputs) for inputs in inputs_per_output.values()) == [1, 1, 10]
    assert not bool((task.clean == task.corrupted).all(1).any())  # never the clean input

    uniform = tracr_task("reverse", n=30, seed=2, balance="none")
    assert len({tuple(r) for r in uniform.clean.tolist()}) == 30
    uniform_answers = [tuple(row) for row in uniform.answers.tolist()]
    assert max(uniform_answers.count(a) for a in set(uniform_answers)) > 20  # skew kept
    with pytest.raises(TaskError, match="balance must be one of"):
        tracr_task("reverse", n=8, balance="classes")
