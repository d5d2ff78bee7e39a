"""The suffix-vector ablation check: ablating the circuit's heads together moves the logits
further than ablating as many heads from outside it (the trained induction toy, every
ablation); exact values on the planted model; defined edge cases and clear refusals."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from circuitreg.services.analysis.results import SUFFIX_ABLATION
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.tasks.base import TaskData
from circuitreg.workers.toy import ToyRun, detect_heads
from circuitreg.workers.validation import (
    EngineEvaluator,
    ValidationConfig,
    ValidationError,
    suffix_ablation,
)
from circuitreg.workers.validation.suffix import logit_changes

from .groundtruth_support import toy_run, toy_setup
from .validation_planted import PLANTED, planted_model, planted_task, true_edges

pytestmark = pytest.mark.usefixtures("one_thread")


def _among(graph: ComputationalGraph, heads: list[str]) -> torch.Tensor:
    """Every edge among input, ``heads`` and logits."""
    nodes = {"input", "logits", *heads}
    return torch.tensor(
        [e.split("->")[0] in nodes and e.split("->")[1].split("<")[0] in nodes for e in graph.edges]
    )


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> ToyRun:
    return toy_run(0, tmp_path_factory.getbasetemp() / "groundtruth-toys")


@pytest.mark.parametrize("ablation", ["resample", "zero", "mean"])
def test_the_toys_induction_heads_move_the_logits_more_than_other_heads(
    toy: ToyRun, ablation: str
) -> None:
    """The circuit is the best previous-token and the best induction head by head_detector
    (independent of any circuit method); the control draws 2 of the other 6 heads."""
    setup = toy_setup(toy)
    heads = detect_heads(setup.bridge, seq_len=toy.seq_len, bos_token=toy.bos_token)
    circuit = sorted([heads["previous_token_head"][0][0], heads["induction_head"][0][0]])
    config = ValidationConfig(n_random=6, seed=3)
    result = suffix_ablation(setup.evaluator(ablation), _among(setup.graph, circuit), config)
    values = result.values
    assert result.name == SUFFIX_ABLATION and result.ablation == ablation
    assert values["n_heads"] == 2 and values["circuit"]["heads"] == circuit
    assert values["n_prompts"] == setup.task.n_examples
    draws = values["control"]["draws"]
    assert len(draws) == 6 and all(len(d["heads"]) == 2 for d in draws)
    assert all(not set(d["heads"]) & set(circuit) for d in draws)
    inside, outside = values["circuit"], values["control"]
    print(f"{ablation}: circuit {inside['mean']:.3f} +- {inside['standard_error']:.3f}, "
          f"control {outside['mean']:.3f} +- {outside['standard_error']:.3f}")  # fmt: skip
    gap = inside["mean"] - outside["mean"]
    assert gap > 3 * (inside["standard_error"] ** 2 + outside["standard_error"] ** 2) ** 0.5
    assert values["ratio"] == pytest.approx(inside["mean"] / outside["mean"])
    assert values["ratio"] > 1.3 and result.passed is True
    # seeded: the same draws again
    again = suffix_ablation(setup.evaluator(ablation), _among(setup.graph, circuit), config)
    assert again.values["control"] == values["control"]


@pytest.fixture(scope="module")
def planted() -> tuple[Any, TaskData, ComputationalGraph]:
    model = planted_model()
    return model, planted_task(model), ComputationalGraph.from_model(model)


def test_exact_values_on_the_planted_model(
    planted: tuple[Any, TaskData, ComputationalGraph],
) -> None:
    """Heads outside the planted path write nothing, so ablating them changes nothing; the
    circuit's number is the mean over prompts of the L2 norm of the change, recomputed here
    from the model's own forward with the heads' outputs replaced."""
    model, task, graph = planted
    evaluator = EngineEvaluator(model, task, graph, "zero", "logit_diff")
    result = suffix_ablation(
        evaluator, graph.mask_from_edges(true_edges(graph)), ValidationConfig()
    )
    values = result.values
    assert values["circuit"]["heads"] == list(PLANTED)
    assert values["control"]["mean"] == pytest.approx(0.0, abs=1e-4)
    assert values["circuit"]["mean"] > 1.0 and result.passed is True
    assert values["ratio"] is None  # a control that changes nothing gives no ratio

    # the same number from TransformerLens hooks: zero the planted heads' outputs (z)
    hooks = []
    for name in PLANTED:
        layer, head = int(name[1]), int(name.split(".h")[1])

        def zero_head(z: torch.Tensor, hook: Any, head: int = head) -> torch.Tensor:
            z[:, :, head] = 0.0
            return z

        hooks.append((f"blocks.{layer}.attn.hook_z", zero_head))
    with torch.no_grad():
        clean = model(task.clean)[:, -1]
        ablated = model.run_with_hooks(task.clean, fwd_hooks=hooks)[:, -1]
    by_hand = torch.linalg.vector_norm(ablated - clean, dim=-1).double()
    assert values["circuit"]["mean"] == pytest.approx(float(by_hand.mean()), rel=1e-4)
    expected_error = float(by_hand.std()) / task.n_examples**0.5
    assert values["circuit"]["standard_error"] == pytest.approx(expected_error, rel=1e-3)
    per_prompt = logit_changes(evaluator, [list(PLANTED)])
    assert per_prompt.shape == (1, task.n_examples)


def test_no_heads_too_many_heads_and_bad_input(
    planted: tuple[Any, TaskData, ComputationalGraph],
) -> None:
    model, task, graph = planted
    evaluator = EngineEvaluator(model, task, graph)
    # no attention heads: nothing is ablated, both changes are 0 by definition
    direct = suffix_ablation(
        evaluator, graph.mask_from_edges(["input->logits"]), ValidationConfig()
    )
    assert direct.values["n_heads"] == 0 and direct.passed is None
    assert direct.values["circuit"]["mean"] == 0.0 and direct.values["control"]["mean"] == 0.0
    assert "no attention heads" in direct.values["note"]
    # 6 of the 8 heads: only 2 outside, so no control set of 6
    six = [f"a{layer}.h{head}" for layer in range(2) for head in range(3)]
    crowded = suffix_ablation(evaluator, _among(graph, six), ValidationConfig())
    assert crowded.values["n_heads"] == 6 and crowded.values["control"] is None
    assert crowded.passed is None and "only 2 heads lie outside" in crowded.values["note"]
    assert crowded.values["circuit"]["mean"] > 1.0

    with pytest.raises(ValidationError, match="no edges"):
        suffix_ablation(evaluator, torch.zeros(graph.n_edges, dtype=torch.bool), ValidationConfig())
    with pytest.raises(ValidationError, match=f"ending in {graph.n_edges} edges"):
        suffix_ablation(evaluator, torch.ones(graph.n_edges - 1), ValidationConfig())
    with pytest.raises(ValidationError, match="expected one mask"):
        suffix_ablation(evaluator, torch.ones(2, graph.n_edges), ValidationConfig())
    with pytest.raises(ValidationError, match="needs an EngineEvaluator"):
        suffix_ablation(object(), torch.ones(graph.n_edges), ValidationConfig())  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="n_random must be >= 1"):
        ValidationConfig(n_random=0)


def test_the_check_is_one_stacked_evaluation(
    planted: tuple[Any, TaskData, ComputationalGraph],
) -> None:
    model, task, graph = planted
    evaluator = EngineEvaluator(model, task, graph)
    before = evaluator.n_evaluations
    suffix_ablation(evaluator, graph.mask_from_edges(true_edges(graph)), ValidationConfig())
    assert evaluator.n_evaluations == before + 1
