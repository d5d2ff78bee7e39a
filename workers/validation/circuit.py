"""From a circuit document to masks and scores over a model's computational graph."""

from __future__ import annotations

import math

import torch

from circuitreg.schema import INPUT, LOGITS, CircuitDocument
from circuitreg.workers.graph import ComputationalGraph, GraphError

from .base import ValidationError


def check_compatible(doc: CircuitDocument, graph: ComputationalGraph) -> None:
    """Refuse a circuit found in a model of another shape, or one resolved by position."""
    if (doc.model.n_layers, doc.model.n_heads) != (graph.n_layers, graph.n_heads):
        raise ValidationError(
            f"circuit {doc.id} is from {doc.model.name} ({doc.model.n_layers} layers x "
            f"{doc.model.n_heads} heads) but the model given has {graph.describe()}"
        )
    positioned = [e.name for e in doc.edges if e.position is not None]
    if positioned:
        raise ValidationError(
            f"circuit {doc.id} has position-resolved edges (e.g. {positioned[0]!r}); "
            "validation patches whole edges over all positions"
        )


def circuit_mask(doc: CircuitDocument, graph: ComputationalGraph) -> torch.Tensor:
    """Boolean ``[n_edges]`` mask of the circuit's edges."""
    check_compatible(doc, graph)
    try:
        return graph.mask_from_edges(e.name for e in doc.circuit_edges())
    except GraphError as exc:
        raise ValidationError(f"circuit {doc.id}: {exc}") from exc


def edge_scores(doc: CircuitDocument, graph: ComputationalGraph) -> torch.Tensor:
    """Signed ``[n_edges]`` scores from the document; NaN where an edge has no score."""
    check_compatible(doc, graph)
    scores = torch.full((graph.n_edges,), math.nan, dtype=torch.float64)
    for edge in doc.edges:
        if edge.score is None:
            continue
        try:
            scores[graph.edge_index(edge.name)] = edge.score
        except GraphError as exc:
            raise ValidationError(f"circuit {doc.id}: {exc}") from exc
    return scores


def inner_components(graph: ComputationalGraph, mask: torch.Tensor) -> list[str]:
    """Heads and MLPs touched by the masked edges (``input`` and ``logits`` excluded)."""
    return [n for n in graph.nodes_in(mask) if n not in (INPUT, LOGITS)]


def without_components(
    graph: ComputationalGraph, mask: torch.Tensor, components: list[str]
) -> torch.Tensor:
    """``mask`` with every edge into or out of ``components`` removed."""
    drop = torch.zeros(graph.n_nodes, dtype=torch.bool)
    for name in components:
        drop[graph.node_index(name)] = True
    touches = drop[graph.edge_source] | drop[graph.edge_target]
    return mask.bool() & ~touches


def knockout_mask(graph: ComputationalGraph, components: list[str]) -> torch.Tensor:
    """The full model with ``components`` knocked out (every edge leaving them ablated)."""
    return without_components(graph, torch.ones(graph.n_edges, dtype=torch.bool), components)
