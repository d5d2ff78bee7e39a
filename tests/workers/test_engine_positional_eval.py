"""workers/engine/positional.py and positional_eval.py: positional patches on an engine's
batches agree with the fast engine where they must, and positional ACDC on the induction toy
keeps the mechanism's edges at the positions where they work."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from circuitreg.schema.names import edge_name
from circuitreg.workers.engine import InterventionEngine
from circuitreg.workers.engine.positional_eval import PositionalEvaluator
from circuitreg.workers.engine.weights import EngineError
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.groundtruth import induction_ground_truth
from circuitreg.workers.methods.registry import default_registry
from circuitreg.workers.models import load_model
from circuitreg.workers.positions import PositionMap
from circuitreg.workers.tasks.base import TaskContext
from circuitreg.workers.tasks.registry import build_task

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = [
    ("toy:induction", "induction:n=8,read=last", "resample"),
    ("tracr:reverse", "tracr:program=reverse,n=8,length=4", "zero"),
    ("tracr:frac_prevs", "tracr:program=frac_prevs,n=8", "mean"),
]


def _engine(model: str, task_spec: str, ablation: str) -> InterventionEngine:
    loaded = load_model(model, "cpu")
    task = build_task(task_spec, context=TaskContext.from_loaded(loaded))
    graph = ComputationalGraph.from_model(loaded.bridge)
    return InterventionEngine(
        loaded.bridge, graph, task, ablation, "logit_diff" if "toy" in model else "kl"
    )


@pytest.mark.parametrize(("model", "task_spec", "ablation"), CASES)
def test_the_same_patch_at_every_position_is_the_unpositioned_patch(
    model: str, task_spec: str, ablation: str
) -> None:
    engine = _engine(model, task_spec, ablation)
    modes = ["index"] + (["spans"] if engine.task.spans is not None else [])
    gen = torch.Generator().manual_seed(0)
    patch = (torch.rand(5, engine.graph.n_edges, generator=gen) < 0.4).float()
    fast = engine.evaluate(patch)
    for mode in modes:
        positions = PositionMap.for_task(engine.task, mode)
        evaluator = PositionalEvaluator(engine, positions)
        spread = patch[:, :, None].expand(-1, -1, positions.size).reshape(5, -1)
        assert torch.allclose(evaluator.evaluate(spread), fast, rtol=1e-5, atol=1e-6)


def test_a_patch_at_one_position_changes_only_what_reads_it() -> None:
    """On the logits edge of the last writer, a patch at a token the logits never read
    changes nothing; at the read token it is the whole edge's patch."""
    engine = _engine(*CASES[0])
    positions = PositionMap.for_task(engine.task, "spans")
    evaluator = PositionalEvaluator(engine, positions)
    e, q = engine.graph.n_edges - 1, positions.size
    at = torch.zeros(2, engine.graph.n_edges, q)
    at[0, e, positions.labels.index("A-first")] = 1.0
    at[1, e, positions.labels.index("A-second")] = 1.0
    values = evaluator.evaluate(at.view(2, -1))
    whole = torch.zeros(1, engine.graph.n_edges)
    whole[0, e] = 1.0
    assert float(values[0]) == pytest.approx(engine.clean_metric(), abs=1e-6)
    assert float(values[1]) == pytest.approx(float(engine.evaluate(whole)[0]), abs=1e-5)


def test_patches_of_the_wrong_width_are_refused() -> None:
    engine = _engine(*CASES[0])
    evaluator = PositionalEvaluator(engine, PositionMap.for_task(engine.task, "spans"))
    with pytest.raises(EngineError, match=r"positional patches are \[S, \d+\]"):
        evaluator.evaluate(torch.zeros(1, engine.graph.n_edges))


def test_positional_acdc_keeps_the_key_edge_at_b_first() -> None:
    loaded: Any = load_model("toy:induction", "cpu")
    task = build_task("induction:n=16,read=last", context=TaskContext.from_loaded(loaded))
    graph = ComputationalGraph.from_model(loaded.bridge)
    truth = induction_ground_truth(loaded.bridge)
    prev, ind = truth.previous_token_heads[0][0], truth.induction_heads[0][0]
    info = default_registry().get("acdc")
    result = info.fn(loaded.bridge, task, graph, info.config({"positions": "spans", "tau": 0.01}))
    assert result.circuit is not None and result.positions is not None
    assert result.circuit.shape == (graph.n_edges, result.positions.size)
    labels = result.positions.labels
    key = graph.edge_index(edge_name(prev, ind, "k"))
    kept_at = {labels[q] for q in result.circuit[key].nonzero().flatten().tolist()}
    assert "B-first" in kept_at
    assert result.position_scores is not None
    assert int(result.position_scores[key].abs().argmax()) == labels.index("B-first")
    # the kept positional circuit is what ACDC measured last
    evaluator = PositionalEvaluator(
        InterventionEngine(loaded.bridge, graph, task, "resample", "kl"), result.positions
    )
    kept = float(evaluator.evaluate_circuits(result.circuit.view(1, -1))[0])
    assert kept == pytest.approx(result.extra["final_metric"], abs=1e-5)
