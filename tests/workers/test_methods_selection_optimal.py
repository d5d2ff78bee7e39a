"""The ``optimal`` selection: a MILP (HiGHS) for the connected K edges with the most |score|."""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from circuitreg.schema.circuit import ModelRef
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.base import ScoreResult, to_document
from circuitreg.workers.methods.eap import EAPConfig
from circuitreg.workers.methods.selection import (
    Selection,
    SelectionError,
    explain_selection,
)
from circuitreg.workers.methods.selection_optimal import OPTIMAL_TIME_LIMIT, objective
from circuitreg.workers.tasks.induction import induction_task


def _connected(graph: ComputationalGraph, mask: torch.Tensor) -> bool:
    return bool(torch.equal(graph.prune_dangling(mask), mask))


def _value(scores: torch.Tensor, mask: torch.Tensor) -> float:
    return objective(scores.abs(), mask)


def _brute_force(graph: ComputationalGraph, scores: torch.Tensor, k: int) -> tuple[float, set[int]]:
    """Best total |score| over every connected edge subset of at most ``k`` edges."""
    magnitude = scores.abs().double()
    best, best_set = 0.0, set()
    for size in range(1, k + 1):
        for subset in itertools.combinations(range(graph.n_edges), size):
            mask = torch.zeros(graph.n_edges, dtype=torch.bool)
            mask[list(subset)] = True
            value = float(magnitude[list(subset)].sum())
            if value > best + 1e-12 and _connected(graph, mask):
                best, best_set = value, set(subset)
    return best, best_set


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_optimal_finds_the_brute_force_optimum_on_a_tiny_graph(seed: int) -> None:
    """One attention layer of two heads and an MLP: 13 edges, all 8,192 subsets enumerated
    (those of at most K edges). Heavy-tailed scores make top_k and greedy miss it."""
    graph = ComputationalGraph(n_layers=1, n_heads=2)
    assert graph.n_edges == 13
    scores = torch.randn(graph.n_edges, generator=torch.Generator().manual_seed(seed)) ** 3
    for k in (1, 2, 3, 4, 6):
        best, best_set = _brute_force(graph, scores, k)
        outcome = explain_selection(scores, graph, Selection("optimal", k))
        chosen = set(outcome.mask.nonzero().flatten().tolist())
        assert _value(scores, outcome.mask) == pytest.approx(best, rel=1e-6), (k, outcome.note)
        assert chosen == best_set, k  # continuous random scores: the optimum is unique
        assert outcome.note is None or "edges kept" in outcome.note


def test_a_known_optimum_that_top_k_and_greedy_miss() -> None:
    """Hand-built: a high-scoring edge out of a node nothing useful feeds, and a path whose
    first edge scores low. K=3: the optimum is the whole path (1 + 5 + 5 = 11); top_k keeps
    the path too only after walking past the dangling edge; greedy takes the dangling edge."""
    graph = ComputationalGraph(n_layers=2, n_heads=2)
    scores = torch.zeros(graph.n_edges)
    path = ["input->a0.h0<v>", "a0.h0->m1", "m1->logits"]
    for name, value in zip(path, [1.0, 5.0, 5.0], strict=True):
        scores[graph.edge_index(name)] = value
    scores[graph.edge_index("a1.h1->m1")] = 4.0  # a1.h1 is never fed: it dangles
    scores[graph.edge_index("input->logits")] = 3.0
    optimal = explain_selection(scores, graph, Selection("optimal", 3))
    assert graph.edges_from_mask(optimal.mask) == path and optimal.note is None
    greedy = explain_selection(scores, graph, Selection("greedy", 3)).mask
    assert _value(scores, greedy) < 11.0
    # K=2: no two edges of the path connect; the unscored input->m1 feeds m1, so
    # input->m1 + m1->logits (5) beats input->logits alone (3): a zero edge kept to connect.
    two = explain_selection(scores, graph, Selection("optimal", 2))
    assert graph.edges_from_mask(two.mask) == ["input->m1", "m1->logits"]
    assert two.note is None


@pytest.mark.parametrize(
    ("n_layers", "n_heads", "attn_only"), [(2, 2, False), (2, 4, True), (3, 2, False)]
)
def test_optimal_beats_top_k_and_greedy_and_stays_connected(
    n_layers: int, n_heads: int, attn_only: bool
) -> None:
    graph = ComputationalGraph(n_layers=n_layers, n_heads=n_heads, attn_only=attn_only)
    for seed in range(4):
        gen = torch.Generator().manual_seed(seed)
        scores = torch.randn(graph.n_edges, generator=gen) ** 3
        scores[torch.rand(graph.n_edges, generator=gen) < 0.3] = 0.0  # unscored edges
        for k in (3, 8, 20):
            optimal = explain_selection(scores, graph, Selection("optimal", k)).mask
            assert int(optimal.sum()) <= k
            assert _connected(graph, optimal)
            for i in (optimal & (scores == 0)).nonzero().flatten().tolist():
                without = optimal.clone()
                without[i] = False  # an unscored edge is kept only as a needed connector
                assert not _connected(graph, without)
            greedy = explain_selection(scores, graph, Selection("greedy", k)).mask
            assert _value(scores, optimal) >= _value(scores, greedy) - 1e-9
            top = explain_selection(scores, graph, Selection("top_k", k)).mask
            if int(top.sum()) <= k:  # top_k may overshoot K when one edge connects several
                assert _value(scores, optimal) >= _value(scores, top) - 1e-9


def test_an_edge_scored_zero_is_kept_only_to_connect_others() -> None:
    graph = ComputationalGraph(n_layers=2, n_heads=2)
    scores = torch.zeros(graph.n_edges)
    scores[graph.edge_index("a0.h0->logits")] = 2.0  # needs input->a0.h0 (any of q/k/v)
    outcome = explain_selection(scores, graph, Selection("optimal", 10))
    kept = graph.edges_from_mask(outcome.mask)
    assert len(kept) == 2 and "a0.h0->logits" in kept and _connected(graph, outcome.mask)
    assert outcome.note is not None and outcome.note.startswith("optimal 10: 2 edges kept")
    nothing = explain_selection(torch.zeros(graph.n_edges), graph, Selection("optimal", 5))
    assert not bool(nothing.mask.any())


def _fake_milp(status: int, x: Any) -> Any:
    def milp(*args: Any, **kwargs: Any) -> SimpleNamespace:
        assert kwargs["options"]["time_limit"] == 0.5
        return SimpleNamespace(status=status, x=x, mip_gap=0.25, message="stopped")

    return milp


def test_a_solver_stopped_by_its_time_limit_falls_back_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import scipy.optimize

    graph = ComputationalGraph(n_layers=2, n_heads=2)
    scores = torch.randn(graph.n_edges, generator=torch.Generator().manual_seed(3)) ** 3
    selection = Selection("optimal", 6, time_limit=0.5)
    greedy = explain_selection(scores, graph, Selection("greedy", 6)).mask
    top = explain_selection(scores, graph, Selection("top_k", 6)).mask
    best_heuristic = max(_value(scores, greedy), _value(scores, top))
    # No solution at all: the better of greedy's and top_k's.
    monkeypatch.setattr(scipy.optimize, "milp", _fake_milp(1, None))
    fallback = explain_selection(scores, graph, selection)
    assert _value(scores, fallback.mask) == pytest.approx(best_heuristic)
    assert fallback.note is not None
    assert "stopped at its 0.5 s time limit, gap 25.00%" in fallback.note
    assert "without a solution better than" in fallback.note
    # A feasible solution better than both: kept, and said to be unproved.
    monkeypatch.undo()
    solved = explain_selection(scores, graph, Selection("optimal", 6)).mask
    x = np.concatenate([solved.numpy().astype(float), np.ones(graph.n_nodes)])
    monkeypatch.setattr(scipy.optimize, "milp", _fake_milp(1, x))
    early = explain_selection(scores, graph, selection)
    assert torch.equal(early.mask, solved)
    assert early.note is not None and "kept its best solution found, not proved optimal" in (
        early.note
    )


def test_optimal_selection_options_and_record() -> None:
    assert Selection("optimal", 5).to_dict() == {
        "mode": "optimal",
        "value": 5,
        "prune_dangling": True,
        "time_limit": OPTIMAL_TIME_LIMIT,
    }
    assert Selection("optimal", 5, time_limit=2).to_dict()["time_limit"] == 2
    assert "time_limit" not in Selection("top_k", 5).to_dict()
    with pytest.raises(SelectionError, match="only optimal takes a time_limit"):
        Selection("top_k", 5, time_limit=1)
    with pytest.raises(SelectionError, match="time_limit must be > 0"):
        Selection("optimal", 5, time_limit=0)
    with pytest.raises(SelectionError, match="whole number"):
        Selection("optimal", 2.5)
    graph = ComputationalGraph(n_layers=2, n_heads=2)
    result = ScoreResult(
        torch.linspace(-1, 1, graph.n_edges), "eap", EAPConfig().to_dict(), 1, 1, 0
    )
    doc = to_document(result, graph, Selection("optimal", 10), ModelRef(name="toy", n_layers=2,
                      n_heads=2), induction_task(4, 3, 30))  # fmt: skip
    assert doc.provenance.extra["selection"]["mode"] == "optimal"
    assert 0 < len(doc.circuit_edges()) <= 10


def test_the_worker_and_the_cli_accept_the_optimal_selection() -> None:
    import typer

    from circuitreg.cli.discovery import _selection as cli_selection
    from circuitreg.workers.runtime.executors import JobSpecError
    from circuitreg.workers.runtime.executors import _selection as job_selection

    assert job_selection({"mode": "optimal", "value": 24}) == Selection("optimal", 24)
    assert job_selection({"mode": "optimal", "value": 8, "time_limit": 5}).time_limit == 5
    with pytest.raises(JobSpecError, match="unknown key"):
        job_selection({"mode": "optimal", "value": 8, "limit": 5})
    assert cli_selection(None, None, None, 12) == Selection("optimal", 12)
    assert cli_selection(None, None, None, 12, 3.0) == Selection("optimal", 12, time_limit=3.0)
    with pytest.raises(typer.BadParameter, match="at most one"):
        cli_selection(5, None, None, 12)
    with pytest.raises(typer.BadParameter, match="--time-limit goes with --optimal"):
        cli_selection(5, None, None, None, 3.0)
