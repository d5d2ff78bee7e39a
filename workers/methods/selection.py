"""Turning edge scores into a circuit: threshold, top-k, greedy or optimal, then dangling-edge
pruning.

Scores are signed; selection ranks by absolute value (an edge that hurts the task is as much
part of the mechanism as one that helps). After choosing, edges that lie on no
``input -> logits`` path of chosen edges are pruned, as MIB and EAP-IG do, so the circuit is
always a connected computation. ``top_k`` K keeps K connected edges (walking further down
the ranking as pruning drops some), and every shortfall comes with a one-line reason.
``optimal`` K solves for the connected set of at most K edges with the most total |score|, as a
mixed-integer program (``selection_optimal``).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.selection_optimal import OPTIMAL_TIME_LIMIT, optimal_selection

SelectionMode = Literal["threshold", "top_k", "greedy", "optimal"]
SELECTION_MODES: tuple[str, ...] = ("threshold", "top_k", "greedy", "optimal")


class SelectionError(ValueError):
    """A selection with a bad mode or value."""


@dataclass(frozen=True)
class Selection:
    """How to pick edges: ``threshold`` (|score| >= value), ``top_k`` (value edges),
    ``greedy`` (grow from the logits backwards, always adding the best-scoring edge whose
    target is already in the circuit, until ``value`` edges are chosen) or ``optimal`` (the
    set of at most ``value`` edges, all on input->logits paths, with the largest total
    |score|: a MILP solved by HiGHS within ``time_limit`` seconds, default
    ``OPTIMAL_TIME_LIMIT``; only ``optimal`` takes a time limit)."""

    mode: SelectionMode = "top_k"
    value: float = 100
    prune_dangling: bool = True
    time_limit: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in SELECTION_MODES:
            raise SelectionError(
                f"selection mode {self.mode!r} is not threshold, top_k, greedy or optimal"
            )
        if self.mode != "threshold" and (self.value < 0 or int(self.value) != self.value):
            raise SelectionError(f"{self.mode} needs a whole number of edges, got {self.value}")
        if self.mode == "threshold" and self.value < 0:
            raise SelectionError(f"threshold must be >= 0, got {self.value}")
        if self.time_limit is not None:
            if self.mode != "optimal":
                raise SelectionError(f"only optimal takes a time_limit, not {self.mode}")
            if not self.time_limit > 0 or not math.isfinite(self.time_limit):
                raise SelectionError(f"time_limit must be > 0 seconds, got {self.time_limit}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, recorded with the circuit (``optimal``: with its time limit)."""
        data: dict[str, Any] = {
            "mode": self.mode, "value": self.value, "prune_dangling": self.prune_dangling
        }  # fmt: skip
        if self.mode == "optimal":
            data["time_limit"] = self.solver_time_limit
        return data

    @property
    def solver_time_limit(self) -> float:
        """The MILP's time limit in seconds (``optimal``)."""
        return OPTIMAL_TIME_LIMIT if self.time_limit is None else float(self.time_limit)


@dataclass(frozen=True)
class SelectionOutcome:
    """The chosen edges, and in one line why there are not exactly as many as asked."""

    mask: torch.Tensor
    note: str | None = None


def select_edges(
    scores: torch.Tensor, graph: ComputationalGraph, selection: Selection
) -> torch.Tensor:
    """Boolean ``[n_edges]`` mask of the chosen edges (dangling ones pruned if asked)."""
    return explain_selection(scores, graph, selection).mask


def explain_selection(
    scores: torch.Tensor, graph: ComputationalGraph, selection: Selection
) -> SelectionOutcome:
    """The chosen edges and, where their number is not what was asked, the reason.

    ``top_k`` K keeps K connected edges: it walks down the ranking (stable, so ties go by
    edge order) until dangling-edge pruning leaves K, rather than pruning the top K and
    returning fewer. Edges scored exactly zero are never chosen by rank. When K cannot be
    kept (too few non-zero scores, or the edge that completes a path connects several at
    once) the mask holds what could be kept and ``note`` says why.
    """
    graph.check_edge_vector(scores)
    if scores.ndim != 1:
        raise SelectionError(f"select_edges wants [n_edges] scores, got {tuple(scores.shape)}")
    magnitude = scores.detach().abs().float().cpu()
    if torch.isnan(magnitude).any():
        raise SelectionError("edge scores contain NaN")
    if selection.mode == "threshold":
        mask = magnitude >= selection.value
        return SelectionOutcome(graph.prune_dangling(mask) if selection.prune_dangling else mask)
    k = int(selection.value)
    if selection.mode == "optimal":
        fallbacks = {"greedy": graph.prune_dangling(_greedy(magnitude, graph, k))}
        ranked = _top_k(magnitude, graph, k, prune=True).mask
        if int(ranked.sum()) <= k:
            fallbacks["top_k"] = ranked
        solved = optimal_selection(magnitude, graph, k, fallbacks, selection.solver_time_limit)
        note = solved.note
        kept = int(solved.mask.sum())
        if note is None and kept < k:
            note = (
                f"optimal {k}: {kept} edges kept; no other edge with a non-zero score can join "
                f"them on an input->logits path within {k} edges"
            )
        return SelectionOutcome(solved.mask, note)
    if selection.mode == "greedy":
        grown = _greedy(magnitude, graph, k)
        mask = graph.prune_dangling(grown) if selection.prune_dangling else grown
        kept = int(mask.sum())
        note = None
        if kept < k:
            lost = int(grown.sum()) - kept
            note = (
                f"greedy {k}: {kept} edges kept"
                + (f"; {lost} grown edges lie on no input->logits path" if lost else "")
                + ("" if int(grown.sum()) == k else "; no more edges reach the logits")
            )
        return SelectionOutcome(mask, note)
    return _top_k(magnitude, graph, k, selection.prune_dangling)


def _top_k(
    magnitude: torch.Tensor, graph: ComputationalGraph, k: int, prune: bool
) -> SelectionOutcome:
    """The shortest prefix of the ranking whose pruned edges number at least ``k``."""
    order = torch.sort(magnitude, descending=True, stable=True).indices
    n_nonzero = int((magnitude > 0).sum())

    def kept(prefix: int) -> torch.Tensor:
        mask = torch.zeros(graph.n_edges, dtype=torch.bool)
        mask[order[:prefix]] = True
        return graph.prune_dangling(mask) if prune else mask

    low, high = min(k, n_nonzero), n_nonzero
    if int(kept(high).sum()) < k:
        mask = kept(high)
        why = f"only {n_nonzero} edges have a non-zero score"
        if prune and int(mask.sum()) < n_nonzero:
            why += f", of which {int(mask.sum())} lie on an input->logits path"
        return SelectionOutcome(mask, f"top_k {k}: {int(mask.sum())} edges kept; {why}")
    while low < high:  # kept(prefix).sum() grows with the prefix: bisect for the first >= k
        middle = (low + high) // 2
        if int(kept(middle).sum()) >= k:
            high = middle
        else:
            low = middle + 1
    mask = kept(low)
    if int(mask.sum()) > k:
        mask = _trim(mask, magnitude, graph, k)
    note = None
    if int(mask.sum()) > k:
        note = (
            f"top_k {k}: {int(mask.sum())} edges kept; the edge that completes a path "
            f"connects {int(mask.sum()) - k + 1} at once, and no lower-ranked edge can be "
            "dropped without disconnecting others"
        )
    boundary = magnitude[order[low - 1]] if low else None
    if (
        note is None
        and boundary is not None
        and low < graph.n_edges
        and float(magnitude[order[low]]) == float(boundary)
        and float(boundary) > 0
    ):
        note = f"top_k {k}: ties at |score| = {float(boundary):.6g} broken by edge order"
    return SelectionOutcome(mask, note)


TRIM_CANDIDATES = 64
"""Lowest-ranked kept edges tried for removal when a prefix overshoots K (each try prunes)."""


def _trim(
    mask: torch.Tensor, magnitude: torch.Tensor, graph: ComputationalGraph, k: int
) -> torch.Tensor:
    """Drop the lowest-ranked kept edges whose removal disconnects nothing else, down to K.

    The edge that completes a path can connect several edges at once, so the shortest prefix
    with K connected edges may hold more; a redundant low-ranked edge (a second path into a
    node already reached) can go without pruning anything else.
    """
    kept = mask.clone()
    candidates = sorted(kept.nonzero().flatten().tolist(), key=lambda i: float(magnitude[i]))
    for i in candidates[:TRIM_CANDIDATES]:
        if int(kept.sum()) <= k:
            break
        trial = kept.clone()
        trial[i] = False
        if int(graph.prune_dangling(trial).sum()) == int(kept.sum()) - 1:
            kept = trial
    return kept


def _greedy(magnitude: torch.Tensor, graph: ComputationalGraph, k: int) -> torch.Tensor:
    """Grow backwards from the logits: best edge whose target is already reached.

    A max-heap holds the edges entering reached nodes, so growth costs O(E log E).
    """
    mask = torch.zeros(graph.n_edges, dtype=torch.bool)
    sources = graph.edge_source.tolist()
    incoming: dict[int, list[int]] = {}
    for i, target in enumerate(graph.edge_target.tolist()):
        incoming.setdefault(target, []).append(i)
    values = magnitude.tolist()
    logits = graph.node_index("logits")
    heap = [(-values[i], i) for i in incoming.get(logits, [])]
    heapq.heapify(heap)
    reached = {logits}
    chosen = 0
    while heap and chosen < k:
        _, i = heapq.heappop(heap)
        mask[i] = True
        chosen += 1
        if sources[i] not in reached:
            reached.add(sources[i])
            for j in incoming.get(sources[i], []):
                heapq.heappush(heap, (-values[j], j))
    return mask
