"""Turning edge scores into a circuit: threshold, top-k or greedy, then dangling-edge pruning.

Scores are signed; selection ranks by absolute value (an edge that hurts the task is as much
part of the mechanism as one that helps). After choosing, edges that lie on no
``input -> logits`` path of chosen edges are pruned, as MIB and EAP-IG do, so the circuit is
always a connected computation.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any, Literal

import torch

from circuitreg.workers.graph import ComputationalGraph

SelectionMode = Literal["threshold", "top_k", "greedy"]


class SelectionError(ValueError):
    """A selection with a bad mode or value."""


@dataclass(frozen=True)
class Selection:
    """How to pick edges: ``threshold`` (|score| >= value), ``top_k`` (value edges) or
    ``greedy`` (grow from the logits backwards, always adding the best-scoring edge whose
    target is already in the circuit, until ``value`` edges are chosen)."""

    mode: SelectionMode = "top_k"
    value: float = 100
    prune_dangling: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("threshold", "top_k", "greedy"):
            raise SelectionError(f"selection mode {self.mode!r} is not threshold, top_k or greedy")
        if self.mode != "threshold" and (self.value < 0 or int(self.value) != self.value):
            raise SelectionError(f"{self.mode} needs a whole number of edges, got {self.value}")
        if self.mode == "threshold" and self.value < 0:
            raise SelectionError(f"threshold must be >= 0, got {self.value}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, recorded with the circuit."""
        return {"mode": self.mode, "value": self.value, "prune_dangling": self.prune_dangling}


def select_edges(
    scores: torch.Tensor, graph: ComputationalGraph, selection: Selection
) -> torch.Tensor:
    """Boolean ``[n_edges]`` mask of the chosen edges (dangling ones pruned if asked)."""
    graph.check_edge_vector(scores)
    if scores.ndim != 1:
        raise SelectionError(f"select_edges wants [n_edges] scores, got {tuple(scores.shape)}")
    magnitude = scores.detach().abs().float().cpu()
    if torch.isnan(magnitude).any():
        raise SelectionError("edge scores contain NaN")
    if selection.mode == "threshold":
        mask = magnitude >= selection.value
    elif selection.mode == "top_k":
        k = min(int(selection.value), graph.n_edges)
        mask = torch.zeros(graph.n_edges, dtype=torch.bool)
        mask[torch.topk(magnitude, k).indices] = True
    else:
        mask = _greedy(magnitude, graph, int(selection.value))
    return graph.prune_dangling(mask) if selection.prune_dangling else mask


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
