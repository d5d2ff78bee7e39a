"""How alike two circuits are: overlap, weighted overlap, rank agreement and performance.

Two circuits of the same architecture are compared by canonical name (``a1.h2->logits``).
Circuits of models with different depths or widths have no common names, so they are
compared after mapping each component to a shared key:

* ``relative_depth``: a component at layer ``L`` of an ``n``-layer model goes to depth bucket
  ``floor(L / n * buckets)`` (buckets = the smaller model's layer count by default), keeping
  its kind (attention or MLP); every head of one bucket becomes one node.
* ``roles``: a component goes to each role label users attached to it
  (``CircuitDocument.labels``: "previous-token head", "induction head"); components without
  a label are left out of the comparison and counted in the report's note.

Whatever the alignment, the report also gives the cosine similarity of the two circuits'
mechanism embeddings (``circuitreg.services.stores.embedding``, the vectors the registry's
``similarCircuits`` ranks by): over canonical edges, and role-aligned (labelled components
by their roles, unlabelled ones by name), so it is defined for any two circuits.

``input`` and ``logits`` map to themselves under every alignment, and edges keep their
receiver (q, k, v), since which input of a head an edge feeds is part of the mechanism.
Scores of the components or edges that fall on one key are summed (absolute values for the
weighted overlap; for the rank correlation, signed values oriented so that positive helps,
see ``orientation``, since methods disagree on the sign).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from circuitreg.schema import (
    INPUT,
    LOGITS,
    CircuitDocument,
    ComponentKind,
    ConsistencyReport,
    Edge,
    parse_node,
)

from ..stores.embedding import cosine, document_embedding
from ..stores.positions import graph_edges, on_axis
from .orientation import document_sign
from .results import FAITHFULNESS, latest_result

Alignment = Literal["auto", "canonical", "relative_depth", "roles"]
NodeMapper = Callable[[str], tuple[str, ...]]

DEFAULT_TOLERANCE = 0.1


def compare_circuits(
    a: CircuitDocument,
    b: CircuitDocument,
    *,
    alignment: Alignment = "auto",
    tolerance: float = DEFAULT_TOLERANCE,
    depth_buckets: int | None = None,
) -> ConsistencyReport:
    """Compare two circuits; ``auto`` picks canonical names when the shapes match.

    ``auto`` uses canonical names for equal layer and head counts, role labels when the
    shapes differ and both circuits carry labels, and relative depth otherwise. Performance
    agreement reads each document's latest faithfulness result and holds when the two are
    within ``tolerance``.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    chosen, map_a, map_b, notes = _mappers(a, b, alignment, depth_buckets)
    nodes_a = _node_keys(a, map_a)
    nodes_b = _node_keys(b, map_b)
    # a positional circuit compares by its summed edges (its positional ones refine them)
    circuit_a = _edge_weights(graph_edges(a), map_a)
    circuit_b = _edge_weights(graph_edges(b), map_b)
    shared = set(circuit_a) & set(circuit_b)

    (sign_a, why_a), (sign_b, why_b) = document_sign(a), document_sign(b)
    rank, rank_note = _rank_correlation(
        _edge_signed(_summed(a), map_a, sign_a), _edge_signed(_summed(b), map_b, sign_b)
    )
    notes.append(rank_note)
    if sign_a < 0 or sign_b < 0:
        notes.append(f"scores oriented so that positive helps ({why_a}; {why_b})")
    perf_a, perf_b = performance_of(a), performance_of(b)
    agrees = None if perf_a is None or perf_b is None else abs(perf_a - perf_b) <= tolerance
    if agrees is None:
        notes.append("performance agreement unknown: a circuit has no faithfulness result")
    return ConsistencyReport(
        alignment=chosen,
        edge_jaccard=_jaccard(set(circuit_a), set(circuit_b)),
        node_jaccard=_jaccard(nodes_a, nodes_b),
        weighted_overlap=_weighted_overlap(circuit_a, circuit_b),
        rank_correlation=rank,
        shared_edges=len(shared),
        canonical_cosine=cosine(
            document_embedding(a, aligned=False), document_embedding(b, aligned=False)
        ),
        role_aligned_cosine=cosine(
            document_embedding(a, aligned=True), document_embedding(b, aligned=True)
        ),
        performance_a=perf_a,
        performance_b=perf_b,
        performance_agrees=agrees,
        tolerance=tolerance,
        note="; ".join(notes),
    )


def _summed(doc: CircuitDocument) -> list[Edge]:
    """Every edge of the circuit's graph, in and out of the circuit (``stores.common.on_axis``)."""
    return [e for e in doc.edges if not on_axis(doc, e)]


@dataclass(frozen=True)
class EdgeDiff:
    """The aligned in-circuit edges of two circuits: only in ``a``, only in ``b``, in both."""

    alignment: Literal["canonical", "relative_depth", "roles"]
    only_a: tuple[str, ...]
    only_b: tuple[str, ...]
    both: tuple[str, ...]


def diff_edges(
    a: CircuitDocument,
    b: CircuitDocument,
    *,
    alignment: Alignment = "auto",
    depth_buckets: int | None = None,
) -> EdgeDiff:
    """Which aligned edges the two circuits share, under the same alignment rules as
    ``compare_circuits`` (canonical names, or the depth / role keys they map to)."""
    chosen, map_a, map_b, _ = _mappers(a, b, alignment, depth_buckets)
    edges_a = set(_edge_weights(graph_edges(a), map_a))
    edges_b = set(_edge_weights(graph_edges(b), map_b))
    return EdgeDiff(
        alignment=chosen,
        only_a=tuple(sorted(edges_a - edges_b)),
        only_b=tuple(sorted(edges_b - edges_a)),
        both=tuple(sorted(edges_a & edges_b)),
    )


def _mappers(
    a: CircuitDocument,
    b: CircuitDocument,
    alignment: Alignment,
    depth_buckets: int | None,
) -> tuple[Literal["canonical", "relative_depth", "roles"], NodeMapper, NodeMapper, list[str]]:
    """The alignment used and how each circuit's node names map onto shared keys."""
    if depth_buckets is not None and depth_buckets < 1:
        raise ValueError(f"depth_buckets must be >= 1, got {depth_buckets}")
    if alignment not in ("auto", "canonical", "relative_depth", "roles"):
        raise ValueError(f"alignment {alignment!r} is not auto, canonical, relative_depth or roles")
    chosen = _choose_alignment(a, b, alignment)
    notes: list[str] = []
    if chosen == "canonical":
        if (a.model.n_layers, a.model.n_heads) != (b.model.n_layers, b.model.n_heads):
            raise ValueError(
                "canonical alignment needs the same shape: "
                f"{a.model.name} has {a.model.n_layers} layers x {a.model.n_heads} heads, "
                f"{b.model.name} has {b.model.n_layers} x {b.model.n_heads}; "
                "use relative_depth or roles"
            )
        return chosen, _canonical, _canonical, notes
    if chosen == "relative_depth":
        buckets = depth_buckets or min(a.model.n_layers, b.model.n_layers)
        notes.append(f"{buckets} depth buckets")
        return (
            chosen,
            _relative_depth(a.model.n_layers, buckets),
            _relative_depth(b.model.n_layers, buckets),
            notes,
        )
    if not a.labels or not b.labels:
        missing = a.model.name if not a.labels else b.model.name
        raise ValueError(f"roles alignment needs role labels on both circuits; {missing} has none")
    map_a, map_b = _roles(a), _roles(b)
    for doc, mapper in ((a, map_a), (b, map_b)):
        dropped = [c.name for c in doc.circuit_components() if not mapper(c.name)]
        if dropped:
            notes.append(f"{len(dropped)} unlabelled components of {doc.model.name} left out")
    return chosen, map_a, map_b, notes


def performance_of(doc: CircuitDocument) -> float | None:
    """The circuit's latest faithfulness under its own ablation and metric, if measured.

    Falls back to the latest faithfulness under any ablation when none matches the
    document's own, since a circuit imported from elsewhere may only carry that.
    """
    result = latest_result(doc, FAITHFULNESS, ablation=doc.ablation, metric=doc.metric)
    result = result or latest_result(doc, FAITHFULNESS)
    if result is None:
        return None
    value = result.values.get(FAITHFULNESS)
    return float(value) if isinstance(value, int | float) else None


def _choose_alignment(
    a: CircuitDocument, b: CircuitDocument, alignment: Alignment
) -> Literal["canonical", "relative_depth", "roles"]:
    if alignment != "auto":
        return alignment
    if (a.model.n_layers, a.model.n_heads) == (b.model.n_layers, b.model.n_heads):
        return "canonical"
    if a.labels and b.labels:
        return "roles"
    return "relative_depth"


def _canonical(name: str) -> tuple[str, ...]:
    return (name,)


def _relative_depth(n_layers: int, buckets: int) -> NodeMapper:
    def mapper(name: str) -> tuple[str, ...]:
        parsed = parse_node(name)
        if parsed.layer is None:
            return (name,)
        bucket = min(buckets - 1, math.floor(parsed.layer / n_layers * buckets))
        kind = "attn" if parsed.kind is ComponentKind.ATTN_HEAD else parsed.kind.value
        return (f"{kind}@depth{bucket}",)

    return mapper


def _roles(doc: CircuitDocument) -> NodeMapper:
    labels = {name: tuple(sorted(set(roles))) for name, roles in doc.labels.items()}

    def mapper(name: str) -> tuple[str, ...]:
        if name in (INPUT, LOGITS):
            return (name,)
        return tuple(f"role:{role}" for role in labels.get(name, ()))

    return mapper


def _node_keys(doc: CircuitDocument, mapper: NodeMapper) -> set[str]:
    keys: set[str] = set()
    for component in doc.circuit_components():
        keys.update(mapper(component.name))
    return keys


def _edge_keys(edge: Edge, mapper: NodeMapper) -> list[str]:
    suffix = f"<{edge.receiver.value}>" if edge.receiver is not None else ""
    return [f"{s}->{t}{suffix}" for s in mapper(edge.source) for t in mapper(edge.target)]


def _edge_weights(edges: Iterable[Edge], mapper: NodeMapper) -> dict[str, float]:
    """Absolute importance per aligned edge; an unscored edge weighs 1."""
    weights: dict[str, float] = defaultdict(float)
    for edge in edges:
        weight = 1.0 if edge.score is None else abs(edge.score)
        for key in _edge_keys(edge, mapper):
            weights[key] += weight
    return dict(weights)


def _edge_signed(edges: Iterable[Edge], mapper: NodeMapper, sign: float) -> dict[str, float]:
    """Helpful-oriented score per aligned edge over every scored edge (in the circuit or not)."""
    scores: dict[str, float] = defaultdict(float)
    for edge in edges:
        if edge.score is None:
            continue
        for key in _edge_keys(edge, mapper):
            scores[key] += sign * edge.score
    return dict(scores)


def _jaccard(a: set[str], b: set[str]) -> float:
    """|A ∩ B| / |A ∪ B|; two empty circuits are identical, so 1."""
    union = a | b
    return 1.0 if not union else len(a & b) / len(union)


def _weighted_overlap(a: dict[str, float], b: dict[str, float]) -> float:
    """Weighted Jaccard (Ruzicka) of the two importance distributions.

    Each circuit's absolute scores are normalised to sum to 1 first, so a circuit scored
    on a larger scale (another metric, a bigger model) is not favoured: the result is
    sum(min) / sum(max) over the union of edges, 1 for equal shares, 0 for no common edge.
    """
    if not a and not b:
        return 1.0
    keys = sorted(set(a) | set(b))
    va, vb = _shares(a, keys), _shares(b, keys)
    denominator = float(np.maximum(va, vb).sum())
    return 0.0 if denominator == 0 else float(np.minimum(va, vb).sum()) / denominator


def _shares(weights: dict[str, float], keys: list[str]) -> np.ndarray:
    """Each key's share of the circuit's total importance (equal shares if all are 0)."""
    values = np.array([weights.get(k, 0.0) for k in keys], dtype=float)
    if values.sum() <= 0:
        values = np.array([1.0 if k in weights else 0.0 for k in keys])
    total = values.sum()
    return values / total if total > 0 else values


def _rank_correlation(a: dict[str, float], b: dict[str, float]) -> tuple[float | None, str]:
    """Spearman correlation of the scores of every edge scored in both documents."""
    shared = sorted(set(a) & set(b))
    if len(shared) < 2:
        return None, f"rank correlation undefined: {len(shared)} edges scored in both"
    xa = np.array([a[k] for k in shared])
    xb = np.array([b[k] for k in shared])
    if np.ptp(xa) == 0 or np.ptp(xb) == 0:
        return None, "rank correlation undefined: constant scores"
    # Imported here: scipy.stats takes a second to import and builds examples of its
    # distributions that probe sys.modules for torch, which the API process never loads.
    from scipy.stats import spearmanr

    rho = float(spearmanr(xa, xb).statistic)
    return rho, f"rank correlation over {len(shared)} edges scored in both"
