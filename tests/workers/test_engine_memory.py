"""The engine plans its example batch from a memory budget, and refuses what cannot fit.

A budget that holds only a few examples gives the same scores in more passes (EAP's scores
are sums over examples); a budget below one example stops the run before any forward with
the estimate and the budget in the message; ``CIRCUITREG_MEMORY_BUDGET`` is read as a size.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge

from circuitreg.settings import Settings, SettingsError, get_settings
from circuitreg.workers.engine import EngineError, InterventionEngine
from circuitreg.workers.engine.memory import Widths, pass_cost, plan_batch
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.acdc import ACDCConfig, acdc
from circuitreg.workers.methods.eap import EAPConfig, attribution_patching
from circuitreg.workers.tasks.induction import induction_task

from .tiny_bridges import WITH_MLP

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> Any:
    return TransformerBridge.boot_native(WITH_MLP)


def _task(n: int = 10) -> Any:
    return induction_task(seq_len=6, n=n, d_vocab=40, seed=2)


def _one_example(model: Any, workload: Any) -> int:
    engine = InterventionEngine(model, ComputationalGraph.from_model(model), _task(), verify=False)
    widths = Widths.of(engine.weights, engine.graph, engine.task.seq_len)
    return pass_cost(widths, workload).per_example()


def test_a_small_budget_batches_fewer_examples_and_scores_the_same(model: Any) -> None:
    graph, task = ComputationalGraph.from_model(model), _task()
    per_example = _one_example(model, "attribution")
    budget = 3 * per_example + per_example // 2  # three examples fit, four do not
    engine = InterventionEngine(model, graph, task, workload="attribution", memory_budget=budget)
    assert engine.batch_size == 3 and "3 examples per pass" in engine.plan.describe()
    assert [len(b.clean) for b in task.batches(engine.batch_size)] == [3, 3, 3, 1]
    whole = attribution_patching(model, task, graph, EAPConfig())
    get_settings.cache_clear()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CIRCUITREG_MEMORY_BUDGET", str(budget))
        planned = attribution_patching(model, task, graph, EAPConfig())
    get_settings.cache_clear()
    assert planned.n_forward == 2 * 4 and whole.n_forward == 2  # four batches against one
    assert torch.allclose(planned.edge_scores, whole.edge_scores, atol=1e-6, rtol=1e-5)


def test_a_budget_below_one_example_is_refused_before_any_forward(
    model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_forward(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a forward ran before the plan refused the run")

    monkeypatch.setattr(InterventionEngine, "verify", no_forward)
    monkeypatch.setattr(model, "forward", no_forward)
    needed = _one_example(model, "patching_grad")
    graph = ComputationalGraph.from_model(model)
    expected = (r"needs about .* [KM]iB for one example of 12 tokens \(patching_grad pass, 16 "
                r"set\(s\) alive at once\) but the memory budget is 1000 B")  # fmt: skip
    with pytest.raises(EngineError, match=expected):
        InterventionEngine(model, graph, _task(), workload="patching_grad", memory_budget=1000)
    assert needed > 1000


def test_the_budget_bounds_the_sets_per_pass(model: Any) -> None:
    """ACDC's candidate sets: a budget for one set per pass gives the same circuit."""
    graph, task = ComputationalGraph.from_model(model), _task(4)
    widths = Widths.of(*_weights_and_graph(model), task.seq_len)
    cost = pass_cost(widths, "patching")
    tight = 4 * cost.per_example(sets=1) + cost.per_set // 2
    plan = plan_batch(widths, "patching", 32, tight)
    assert plan.batch_size == 4 and plan.sets_within(4, 16) == 1
    engine = InterventionEngine(model, graph, task, memory_budget=tight, set_batch=16)
    assert engine.sets_per_pass(4) == 1
    roomy = InterventionEngine(model, graph, task, memory_budget=2**34, set_batch=16)
    assert roomy.sets_per_pass(4) > 1
    free = acdc(model, task, graph, ACDCConfig())
    get_settings.cache_clear()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CIRCUITREG_MEMORY_BUDGET", str(tight))
        bounded = acdc(model, task, graph, ACDCConfig())
    get_settings.cache_clear()
    assert bounded.circuit is not None and free.circuit is not None
    assert torch.equal(bounded.circuit, free.circuit)
    assert bounded.n_forward > free.n_forward


def _weights_and_graph(model: Any) -> tuple[Any, ComputationalGraph]:
    engine = InterventionEngine(model, ComputationalGraph.from_model(model), _task(), verify=False)
    return engine.weights, engine.graph


@pytest.mark.parametrize(
    ("text", "expected"), [("12GiB", 12 * 2**30), ("512MB", 512 * 10**6), ("4096", 4096)]
)
def test_the_budget_setting_reads_sizes(text: str, expected: int) -> None:
    assert Settings(memory_budget=text).memory_budget == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["12 parsecs", "0", "-5GiB"])
def test_a_bad_budget_setting_names_the_variable(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIRCUITREG_MEMORY_BUDGET", text)
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsError, match="CIRCUITREG_MEMORY_BUDGET"):
            get_settings()
    finally:
        get_settings.cache_clear()


def test_gradient_runs_count_every_set_of_a_step(model: Any) -> None:
    """Mask pruning's samples all stay in the autograd graph until the backward, so a step of
    8 samples plans for 8 sets per example; patching without gradients plans for one."""
    widths = Widths.of(*_weights_and_graph(model), 12)
    cost = pass_cost(widths, "patching_grad")
    budget = 5 * cost.per_example(8)
    assert plan_batch(widths, "patching_grad", 32, budget, sets=8).batch_size == 5
    assert plan_batch(widths, "patching_grad", 32, budget, sets=1).batch_size == 32
    patching = pass_cost(widths, "patching")
    assert plan_batch(widths, "patching", 32, patching.per_example(), sets=8).batch_size == 1
