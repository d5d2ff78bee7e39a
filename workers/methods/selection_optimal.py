"""The ``optimal`` selection: the connected edge set of at most K edges with the most |score|.

Maximise ``sum_e |score_e| x_e`` over binary ``x_e`` (edge kept) and ``y_n`` (node used)
subject to

* ``sum_e x_e <= K``;
* ``x_e <= y_source(e)`` and ``x_e <= y_target(e)``: a kept edge's nodes are used;
* ``y_n <= sum of x over the edges entering n`` for every node but ``input``, and
  ``y_n <= sum of x over the edges leaving n`` for every node but ``logits``: a used node is
  fed by a kept edge (or is the input) and feeds a kept edge (or is the logits).

The graph is acyclic (edges go from earlier writers to later readers), so these local rules
are exactly "every kept edge lies on an ``input -> logits`` path of kept edges", the set that
``ComputationalGraph.prune_dangling`` leaves unchanged (a head counts as fed when any of its
q/k/v inputs is). The program is solved by ``scipy.optimize.milp`` (HiGHS' branch and cut)
within a time limit and a relative gap of ``OPTIMAL_GAP``; no solver is written here.

When HiGHS stops at the time limit, its best solution is kept if it holds at least as much
|score| as the heuristic selections of K edges it is given (greedy's, always feasible, and
top_k's where it keeps at most K), otherwise the best of those is; the note says which, with
the gap HiGHS had proved. Kept edges scored exactly 0 add nothing, so those that connect no
scored edge are dropped afterwards (the solver may pad the budget with them).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from circuitreg.schema.names import INPUT, LOGITS
from circuitreg.workers.graph import ComputationalGraph

if TYPE_CHECKING:
    from scipy.optimize import LinearConstraint, OptimizeResult
    from scipy.sparse import coo_array

OPTIMAL_TIME_LIMIT = 30.0
"""Seconds HiGHS may search before the best solution found so far is used."""
OPTIMAL_GAP = 1e-6
"""Relative gap between the solution and HiGHS' bound at which it counts as optimal."""
# HiGHS runs without its presolve: on GPT-2 small's graph (32,491 edges, K=200, random
# heavy-tailed scores) presolve ran for 39-54 s, past a 5 s time limit, and found no
# solution; without it the same program was solved to optimality in 1.3 s (K=100-1000 and
# other seeds: 1-27 s, one stop at the 30 s limit with a 12.7% gap; 2 shared CPU cores).


@dataclass(frozen=True)
class OptimalOutcome:
    """The chosen mask, its total |score|, and how the solver ended (for the note)."""

    mask: torch.Tensor
    objective: float
    status: str  # "optimal", "time_limit" or "fallback"
    note: str | None
    seconds: float


def objective(magnitude: torch.Tensor, mask: torch.Tensor) -> float:
    """Total |score| of the kept edges (the MILP's objective)."""
    return float(magnitude.double()[mask.bool()].sum())


def optimal_selection(
    magnitude: torch.Tensor,
    graph: ComputationalGraph,
    k: int,
    fallbacks: dict[str, torch.Tensor],
    time_limit: float = OPTIMAL_TIME_LIMIT,
) -> OptimalOutcome:
    """Solve the program above for ``k`` edges.

    ``fallbacks`` are heuristic selections by name (``greedy``, ``top_k``), each connected and
    of at most ``k`` edges; the best of them is used when the solver ends without a better one.
    """
    started = time.perf_counter()
    values = magnitude.double().cpu().numpy()
    if k == 0 or not bool((values > 0).any()):
        empty = torch.zeros(graph.n_edges, dtype=torch.bool)
        return OptimalOutcome(empty, 0.0, "optimal", None, time.perf_counter() - started)
    result = _solve(values, graph, k, time_limit)
    seconds = time.perf_counter() - started
    found = _solution(result, magnitude, graph, k)
    if not fallbacks:
        raise ValueError("optimal_selection needs at least one fallback selection")
    best_name, best = max(fallbacks.items(), key=lambda item: objective(magnitude, item[1]))
    best_value = objective(magnitude, best)
    if result.status == 0 and found is not None:
        return OptimalOutcome(found, objective(magnitude, found), "optimal", None, seconds)
    why = _why_not_optimal(result, time_limit)
    if found is not None and objective(magnitude, found) >= best_value:
        value = objective(magnitude, found)
        note = (
            f"optimal {k}: {why}; kept its best solution found, not proved optimal "
            f"(total |score| {value:.6g}; {best_name} {k}: {best_value:.6g})"
        )
        return OptimalOutcome(found, value, "time_limit", note, seconds)
    note = (
        f"optimal {k}: {why} without a solution better than {best_name}'s; kept {best_name} {k} "
        f"({int(best.sum())} edges, total |score| {best_value:.6g})"
    )
    return OptimalOutcome(best.clone(), best_value, "fallback", note, seconds)


def _solve(
    values: np.ndarray, graph: ComputationalGraph, k: int, time_limit: float
) -> OptimizeResult:
    """Run HiGHS on the program for ``k`` edges with edge weights ``values`` (|score|).

    The weights are scaled to at most 1 so that the relative gap means the same for every
    score scale; the node columns cost nothing.
    """
    from scipy.optimize import Bounds, milp

    scale = float(values.max())
    cost = np.concatenate([-values / scale, np.zeros(graph.n_nodes)])  # maximise |score|
    return milp(
        cost,
        constraints=_constraints(graph, k),
        integrality=np.ones(graph.n_edges + graph.n_nodes),
        bounds=Bounds(0, 1),
        options={"time_limit": float(time_limit), "mip_rel_gap": OPTIMAL_GAP, "presolve": False},
    )


def _constraints(graph: ComputationalGraph, k: int) -> LinearConstraint:
    """All rows of the program as ``matrix @ [x, y] <= upper``: the budget, then the
    used-node rows, then the fed-node rows (see the module docstring)."""
    from scipy.optimize import LinearConstraint
    from scipy.sparse import coo_array, vstack

    n_edges, n_columns = graph.n_edges, graph.n_edges + graph.n_nodes
    # Columns: x_0 .. x_{E-1}, then y_0 .. y_{N-1}.
    budget = coo_array(
        (np.ones(n_edges), (np.zeros(n_edges, dtype=int), np.arange(n_edges))),
        shape=(1, n_columns),
    )
    matrix = vstack([budget, *_use_rows(graph), *_fed_rows(graph)]).tocsr()
    upper = np.concatenate([[k], np.zeros(matrix.shape[0] - 1)])
    return LinearConstraint(matrix, -np.inf, upper)


def _use_rows(graph: ComputationalGraph) -> list[coo_array]:
    """``x_e - y_node <= 0`` per edge, once for its source and once for its target."""
    from scipy.sparse import coo_array

    n_edges, n_columns = graph.n_edges, graph.n_edges + graph.n_nodes
    edges, ones = np.arange(n_edges), np.ones(n_edges)
    uses = []
    for ends in (graph.edge_source.numpy(), graph.edge_target.numpy()):
        rows = np.concatenate([edges, edges])
        cols = np.concatenate([edges, n_edges + ends])
        data = np.concatenate([ones, -ones])
        uses.append(coo_array((data, (rows, cols)), shape=(n_edges, n_columns)))
    return uses


def _fed_rows(graph: ComputationalGraph) -> list[coo_array]:
    """``y_n - sum of x over n's incoming edges <= 0`` for every node but ``input``, then
    ``y_n - sum of x over n's outgoing edges <= 0`` for every node but ``logits``."""
    from scipy.sparse import coo_array

    n_edges, n_nodes = graph.n_edges, graph.n_nodes
    edges = np.arange(n_edges)
    src, dst = graph.edge_source.numpy(), graph.edge_target.numpy()
    fed = []
    for ends, exempt in ((dst, graph.node_index(INPUT)), (src, graph.node_index(LOGITS))):
        nodes = np.array([n for n in range(n_nodes) if n != exempt])
        row_of = {int(n): i for i, n in enumerate(nodes)}
        keep = ends != exempt
        edge_rows = np.array([row_of[int(n)] for n in ends[keep]], dtype=int)
        rows = np.concatenate([np.arange(len(nodes)), edge_rows])
        cols = np.concatenate([n_edges + nodes, edges[keep]])
        data = np.concatenate([np.ones(len(nodes)), -np.ones(int(keep.sum()))])
        fed.append(coo_array((data, (rows, cols)), shape=(len(nodes), n_edges + n_nodes)))
    return fed


def _solution(
    result: OptimizeResult, magnitude: torch.Tensor, graph: ComputationalGraph, k: int
) -> torch.Tensor | None:
    """The solver's edge set without its idle padding, or None when it has none (or, never
    expected, one that breaks a constraint: disconnected or over the budget)."""
    if result.x is None:
        return None
    found = _drop_idle(torch.from_numpy(result.x[: graph.n_edges] > 0.5), magnitude, graph)
    if int(graph.prune_dangling(found).sum()) != int(found.sum()) or int(found.sum()) > k:
        return None
    return found


def _why_not_optimal(result: OptimizeResult, time_limit: float) -> str:
    """Why HiGHS did not prove a solution optimal, with the gap it reached if it has one."""
    gap = getattr(result, "mip_gap", None)
    gap_text = f", gap {gap:.2%}" if gap is not None and math.isfinite(gap) else ""
    return (
        f"the MILP solver (HiGHS) stopped at its {time_limit:g} s time limit{gap_text}"
        if result.status == 1
        else f"the MILP solver (HiGHS) ended with status {result.status} ({result.message})"
    )


def _drop_idle(
    mask: torch.Tensor, magnitude: torch.Tensor, graph: ComputationalGraph
) -> torch.Tensor:
    """Drop kept edges scored 0 (with whatever dangles without them) while no scored edge is
    lost: a chain of unscored edges that pads the budget goes, a connector stays."""
    kept = mask.clone()
    scored = int((kept & (magnitude > 0)).sum())
    for i in kept.nonzero().flatten().tolist():
        if not bool(kept[i]) or float(magnitude[i]) > 0:
            continue
        trial = kept.clone()
        trial[i] = False
        trial = graph.prune_dangling(trial)
        if int((trial & (magnitude > 0)).sum()) == scored:
            kept = trial
    return kept
