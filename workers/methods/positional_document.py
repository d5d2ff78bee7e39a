"""A positional run's part of its circuit document: the position axis and the kept positional
edges, sparse beside the summed ones.

A positional run scores ``n_edges x Q`` positional edges (519,856 for GPT-2 small at 16
tokens); a document holding all of them would be most of a gigabyte of JSON objects. So the
document keeps every summed edge as an unpositioned run does, plus only the positional edges
its selection keeps, each with its span (``spans`` mode) and its token index where every
prompt has it at the same one; the dense ``[n_edges, Q]`` scores stay on the result and go to
an artifact (``positional_scores``: the CLI writes it beside the document, the worker and
``--store`` to the artifact store, named in the stored provenance).

The positional selection is the run's selection applied to the positional scores: the ``k``
largest |score| (``top_k``), those at or above a threshold (``threshold``), or the method's
own positional circuit (ACDC's kept positional edges, ``ScoreResult.circuit`` of shape
``[n_edges, Q]``). Selections that need the graph's connectivity (``greedy``, ``optimal``)
are defined on summed edges; for them the positional edges kept are the top ``k``, and the
recorded selection says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from circuitreg.schema.circuit import Component, Edge, PositionAxis
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.selection import Selection
from circuitreg.workers.positions import PositionMap

if TYPE_CHECKING:
    from circuitreg.services.positional_scores import PositionalScores
    from circuitreg.workers.tasks.base import TaskData


def position_axis(positions: PositionMap, tokens: Sequence[str] = ()) -> PositionAxis:
    """The document's axis for a run's ``PositionMap`` and its first clean prompt."""
    return PositionAxis(
        mode=positions.mode,
        labels=positions.labels,
        indices=positions.indices,
        tokens=tuple(tokens),
    )


def positional_mask(
    scores: torch.Tensor, selection: Selection | torch.Tensor, own: torch.Tensor | None
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The kept positional edges ``[n_edges, Q]`` and the selection as recorded."""
    if own is not None and own.shape == scores.shape:
        mask = own.bool().cpu()
        return mask, {"mode": "method", "n_edges": int(mask.sum())}
    magnitude = scores.detach().abs().double().cpu()
    if isinstance(selection, Selection) and selection.mode == "threshold":
        mask = magnitude >= float(selection.value)
        return mask, {
            "mode": "threshold",
            "value": float(selection.value),
            "n_edges": int(mask.sum()),
        }
    k = _top_k(selection, magnitude.numel())
    flat = torch.zeros(magnitude.numel(), dtype=torch.bool)
    flat[torch.topk(magnitude.flatten(), k).indices] = True
    info: dict[str, Any] = {"mode": "top_k", "value": k, "n_edges": k}
    if not (isinstance(selection, Selection) and selection.mode == "top_k"):
        info["note"] = "positional edges kept by |score|: the summed selection needs connectivity"
    return flat.view_as(magnitude), info


def _top_k(selection: Selection | torch.Tensor, total: int) -> int:
    if isinstance(selection, Selection) and selection.mode in ("top_k", "greedy", "optimal"):
        return min(int(selection.value), total)
    if isinstance(selection, torch.Tensor):  # a summed mask: as many positional edges
        return min(int(selection.sum()), total)
    return min(100, total)


def positional_entries(
    graph: ComputationalGraph, positions: PositionMap, scores: torch.Tensor, mask: torch.Tensor
) -> tuple[tuple[Edge, ...], tuple[Component, ...]]:
    """The kept positional edges with their scores, and the components at their positions."""
    spans = positions.mode == "spans"
    edges: list[Edge] = []
    components: dict[tuple[str, int | None, str | None], Component] = {}
    values = scores.detach().double().cpu()
    for e, q in mask.nonzero().tolist():
        position, span = positions.indices[q], positions.labels[q] if spans else None
        edge = Edge.from_name(
            graph.edges[e], score=float(values[e, q]), position=position, span=span
        )
        edges.append(edge)
        for end in (edge.source, edge.target):
            components.setdefault(
                (end, position, span), Component.from_name(end, position=position, span=span)
            )
    return tuple(edges), tuple(components.values())


def positional_scores(
    graph: ComputationalGraph, positions: PositionMap, scores: torch.Tensor
) -> PositionalScores:
    """The run's dense ``[n_edges, Q]`` scores as the artifact the stores keep beside the
    document (``circuitreg.services.positional_scores``: float32, edge names and labels)."""
    from circuitreg.services.positional_scores import PositionalScores

    graph_shape = (graph.n_edges, positions.size)
    if tuple(scores.shape) != graph_shape:
        raise ValueError(f"positional scores {tuple(scores.shape)}, expected {graph_shape}")
    return PositionalScores(
        edge_names=tuple(graph.edges),
        labels=positions.labels,
        mode=positions.mode,
        indices=positions.indices,
        scores=scores.detach().float().cpu().numpy(),
    )


def prompt_tokens(bridge: Any, task: TaskData) -> list[str] | None:
    """The first clean prompt's tokens as text, where the model has a tokenizer (else None:
    the document's axis then shows the token ids)."""
    tokenizer = getattr(bridge, "tokenizer", None)
    if tokenizer is None:
        return None
    try:
        return [str(tokenizer.decode([t])) for t in task.clean[0].tolist()]
    except (ValueError, TypeError, KeyError, IndexError):
        return None
