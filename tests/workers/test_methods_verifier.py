"""workers/methods/verifier.py: the search growth and the pass budget that bound verification
on large graphs, checked against the exact scan on tracr programs."""

from __future__ import annotations

import math

import pytest
import torch

from circuitreg.workers.engine import InterventionEngine
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.base import ConfigError
from circuitreg.workers.methods.registry import default_registry
from circuitreg.workers.methods.verified import VerifiedConfig, verify
from circuitreg.workers.models import load_model
from circuitreg.workers.tasks.base import TaskContext, TaskData
from circuitreg.workers.tasks.registry import build_task

pytestmark = pytest.mark.usefixtures("one_thread")


def _setup(program: str) -> tuple[object, TaskData, ComputationalGraph, torch.Tensor]:
    loaded = load_model(f"tracr:{program}", "cpu")
    task = build_task(f"tracr:program={program},n=16", context=TaskContext.from_loaded(loaded))
    graph = ComputationalGraph.from_model(loaded.bridge)
    info = default_registry().get("eap")
    scores = info.fn(loaded.bridge, task, graph, info.config({"ablation": "zero"})).edge_scores
    return loaded.bridge, task, graph, scores


def _engine(
    bridge: object, task: TaskData, graph: ComputationalGraph, sets: int
) -> InterventionEngine:
    return InterventionEngine(bridge, graph, task, "zero", "kl", set_batch=sets)  # type: ignore[arg-type]


@pytest.mark.parametrize("program", ["frac_prevs", "reverse"])
@pytest.mark.parametrize("sets", [1, 8])
def test_search_finds_the_scans_circuit_in_logarithmic_growth(program: str, sets: int) -> None:
    bridge, task, graph, scores = _setup(program)
    scan = verify(_engine(bridge, task, graph, sets), scores, 0.9, set_batch=sets)
    search = verify(_engine(bridge, task, graph, sets), scores, 0.9, set_batch=sets, grow="search")
    assert search.reached and search.trim_complete and search.faithfulness >= 0.9
    grown = [s for s in search.trace if s.stage == "grow"]
    # the prefix it stops at reaches the target
    assert grown and max(s.faithfulness for s in grown if s.kept) >= 0.9
    # galloping then bisecting: at most about 2 log2(n) prefixes, whatever the circuit's size
    assert len(grown) <= 2 * math.ceil(math.log2(graph.n_edges)) + 2
    # where F grows with the prefix, search and scan grow the same circuit and trim it alike
    assert torch.equal(search.mask, scan.mask)


def test_the_pass_budget_bounds_verification_and_says_so() -> None:
    bridge, task, graph, scores = _setup("reverse")
    free = verify(_engine(bridge, task, graph, 1), scores, 0.9, set_batch=1, grow="search")
    assert free.reached and free.trim_complete and free.n_forward > 12
    # spent while trimming: the grown circuit, partly trimmed, with the F measured on it
    tight = verify(
        _engine(bridge, task, graph, 1), scores, 0.9, set_batch=1, grow="search", max_passes=12
    )
    assert tight.n_forward == 12 and tight.reached and not tight.trim_complete
    assert tight.faithfulness >= 0.9 and int(tight.mask.sum()) > int(free.mask.sum())
    # spent while growing: the most faithful prefix measured, not reached
    short = verify(
        _engine(bridge, task, graph, 1), scores, 0.9, set_batch=1, grow="search", max_passes=6
    )
    assert short.n_forward == 6 and not short.reached and short.faithfulness < 0.9


def test_budget_and_grow_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="grow"):
        VerifiedConfig(grow="walk")
    with pytest.raises(ConfigError, match="max_passes"):
        VerifiedConfig(max_passes=1)
    bridge, task, graph, scores = _setup("frac_prevs")
    with pytest.raises(ConfigError, match="grow mode 'walk'"):
        verify(_engine(bridge, task, graph, 8), scores, grow="walk")
    with pytest.raises(ConfigError, match="at least 3"):
        verify(_engine(bridge, task, graph, 8), scores, max_passes=2)
