"""Mechanism embeddings: a circuit as a vector of edge importances, compared by cosine.

Why a vector: "which stored circuits work like this one?" needs one number per pair of
circuits that grows with the mechanism they share and ignores how each method scales its
scores. A circuit's **canonical embedding** is its importance over canonical edges: each
in-circuit edge ``src->dst<r>`` weighs ``|score|`` (summed over token positions; an unscored
or non-finite score counts 1, and a circuit whose scores are all 0 weighs its edges equally,
as in the consistency report), the vector is normalised to unit length, and two circuits
compare by the cosine of their vectors: 1 for the same edges in the same proportions, 0 for
no common edge. Magnitudes, not signs: methods disagree on the sign convention
(``analysis.orientation``) and an edge that matters matters either way, so every weight is
>= 0 and so is every cosine.

Why a second, **role-aligned** embedding: circuits of different seeds or models put the same
mechanism on different head indices (seed 0's previous-token head is a0.h3, seed 1's a0.h1),
so canonical names under-state their agreement; training-dynamics studies match heads by
role, not index. Here a component that carries role labels (``label_component``:
"previous-token head", "induction head") is replaced by ``role:<label>`` for each of its
labels (its weight split evenly between them), like the consistency report's ``roles``
alignment; ``input``, ``logits`` and every unlabelled component keep their canonical name,
so a circuit without labels has the same role-aligned and canonical embedding. Heads of one
role merge into one key, receivers (q, k, v) stay on the key: ``role:previous-token
head->role:induction head<k>`` is K-composition whichever heads do it.

Why a dense vector as well: the sparse vectors above have as many dimensions as a model has
edges (32,491 on gpt2-small) and different keys per model, while a vector index (Neo4j,
FalkorDB) needs one fixed dimension. ``dense`` hashes each key into one of ``DIMENSIONS``
(256) buckets with a sign taken from the same hash (feature hashing, Weinberger et al. 2009):
the dot product of two hashed vectors is an unbiased estimate of the sparse cosine, with an
error of about 1/sqrt(256) for circuits of many edges. The stores keep it on each circuit,
ask their index (or, on the embedded store, an exact scan of the hashed vectors) for the
nearest ``candidate_count`` circuits, and rank those by the exact sparse cosine, so an
answer's similarities are exact and its order is exact whenever the true neighbours are
among the candidates (always, on a registry of at most that many circuits).

Pure Python (hashlib and math): the stores, the migrations and the consistency report use
it, none of which may import torch, and exact sums (``math.fsum``) make every backend compute
bit-identical similarities whatever order its rows arrive in.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

from circuitreg.schema import INPUT, LOGITS, CircuitDocument, parse_edge

DIMENSIONS = 256
"""Length of the hashed (dense) embedding the vector indexes are built for."""
MIN_CANDIDATES = 100
"""Circuits an index is asked for at least, before exact re-ranking."""
CANDIDATE_FACTOR = 4
"""...and at least this many per circuit asked for."""
ROLE_PREFIX = "role:"

Sparse = dict[str, float]
EdgeScores = Iterable[tuple[str, float | None]]
"""(canonical edge name, score or None) per stored edge; an edge may repeat per position."""


def edge_weights(edges: EdgeScores) -> Sparse:
    """Importance per canonical edge: |score| summed over positions (unscored: 1 each).

    Keys with weight 0 are dropped; if every weight is 0 (all scores 0.0), each edge
    weighs 1, since the circuit's edge set is then all that says what it does.
    """
    parts: dict[str, list[float]] = {}
    for name, score in edges:
        weight = 1.0 if score is None or not math.isfinite(score) else abs(float(score))
        parts.setdefault(name, []).append(weight)
    summed = {name: _exact_sum(values) for name, values in parts.items()}
    if summed and not any(summed.values()):
        return dict.fromkeys(sorted(summed), 1.0)
    return {name: summed[name] for name in sorted(summed) if summed[name] > 0}


def _exact_sum(values: list[float]) -> float:
    """``math.fsum``: correctly rounded, so independent of the order of the values."""
    return values[0] if len(values) == 1 else math.fsum(values)


def normalised(weights: Mapping[str, float]) -> Sparse:
    """The vector scaled to unit length (the empty vector stays empty)."""
    norm = math.sqrt(math.fsum(w * w for w in weights.values()))
    if norm == 0:
        return {}
    return {key: weights[key] / norm for key in sorted(weights)}


def canonical_embedding(edges: EdgeScores) -> Sparse:
    """The unit-length importance vector keyed by canonical edge name."""
    return normalised(edge_weights(edges))


def role_key(node: str, labels: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """The keys a node maps to: its roles, or its canonical name when it has none."""
    if node in (INPUT, LOGITS):
        return (node,)
    roles = sorted(set(labels.get(node, ())))
    return tuple(ROLE_PREFIX + role for role in roles) if roles else (node,)


@lru_cache(maxsize=262144)
def _ends(edge: str) -> tuple[str, str, str]:
    parsed = parse_edge(edge)
    suffix = "" if parsed.receiver is None else f"<{parsed.receiver.value}>"
    return parsed.source, parsed.target, suffix


def role_aligned_weights(
    weights: Mapping[str, float], labels: Mapping[str, Sequence[str]]
) -> Sparse:
    """Canonical edge weights re-keyed by role (see the module docstring)."""
    if not labels:  # every component keeps its name
        return {key: weights[key] for key in sorted(weights)}
    keys: dict[str, tuple[str, ...]] = {}
    parts: dict[str, list[float]] = {}
    for edge, weight in weights.items():
        source, target, suffix = _ends(edge)
        sources = keys.get(source) or keys.setdefault(source, role_key(source, labels))
        targets = keys.get(target) or keys.setdefault(target, role_key(target, labels))
        share = weight / (len(sources) * len(targets))
        for s in sources:
            for t in targets:
                parts.setdefault(f"{s}->{t}{suffix}", []).append(share)
    return {key: _exact_sum(parts[key]) for key in sorted(parts)}


def role_aligned_embedding(edges: EdgeScores, labels: Mapping[str, Sequence[str]]) -> Sparse:
    """The unit-length importance vector keyed by role-aligned edge."""
    return normalised(role_aligned_weights(edge_weights(edges), labels))


def embedding(edges: EdgeScores, labels: Mapping[str, Sequence[str]], *, aligned: bool) -> Sparse:
    """The role-aligned (``aligned``) or canonical embedding of one circuit's edges."""
    weights = edge_weights(edges)
    return normalised(role_aligned_weights(weights, labels) if aligned else weights)


def document_edges(doc: CircuitDocument) -> list[tuple[str, float | None]]:
    """(edge name, score) of a document's in-circuit graph edges: what a store sums (a
    positional circuit's summed edges, not its positional ones too; ``common.on_axis``)."""
    from .positions import graph_edges

    return [(e.name, e.score) for e in graph_edges(doc)]


def document_embedding(doc: CircuitDocument, *, aligned: bool) -> Sparse:
    """A document's embedding, role-aligned by its own ``labels``."""
    return embedding(document_edges(doc), doc.labels, aligned=aligned)


def cosine(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Cosine of two sparse vectors, in [0, 1] for embeddings; 0 if either is empty.

    Exact sums, so the value does not depend on the order of the keys.
    """
    if len(b) < len(a):
        a, b = b, a
    dot = math.fsum(w * b[k] for k, w in a.items() if k in b)
    if dot == 0:
        return 0.0
    norm_a = math.sqrt(math.fsum(w * w for w in a.values()))
    norm_b = math.sqrt(math.fsum(w * w for w in b.values()))
    return max(-1.0, min(1.0, dot / (norm_a * norm_b)))


@lru_cache(maxsize=262144)
def bucket(key: str, dimensions: int = DIMENSIONS) -> tuple[int, float]:
    """The hashed bucket and sign of a key (BLAKE2b: stable across processes and hosts)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest[:4], "little") % dimensions, (1.0 if digest[4] & 1 else -1.0)


def dense(sparse: Mapping[str, float], dimensions: int = DIMENSIONS) -> list[float] | None:
    """The signed feature-hashed vector, unit length; None for an empty embedding.

    Should the signed sums cancel to the zero vector (two keys of equal weight in one bucket
    with opposite signs, and nothing else), the unsigned hash is used instead: a vector index
    cannot hold a zero vector, and the dense vector only chooses candidates.
    """
    if not sparse:
        return None
    for signed in (True, False):
        vector = [0.0] * dimensions
        for key in sorted(sparse):
            index, sign = bucket(key, dimensions)
            vector[index] += (sign if signed else 1.0) * sparse[key]
        norm = math.sqrt(math.fsum(x * x for x in vector))
        if norm > 0:
            return [x / norm for x in vector]
    return None  # pragma: no cover - unsigned sums of positive weights are never zero


def candidate_count(first: int) -> int:
    """How many nearest circuits to ask an index for, to answer ``first`` exactly."""
    return max(MIN_CANDIDATES, CANDIDATE_FACTOR * first)


def rank(
    query: Mapping[str, float],
    candidates: Mapping[str, Mapping[str, float]],
    first: int,
    exclude: str,
) -> list[tuple[str, float]]:
    """The ``first`` candidates by exact cosine to ``query``, best first (ties: id).

    ``exclude`` (the query circuit) and candidates sharing no key with it (cosine 0) are
    left out: they are not similar, and a vector index returns an arbitrary set of them.
    """
    scored = [
        (cid, sim)
        for cid, vector in candidates.items()
        if cid != exclude and (sim := cosine(query, vector)) > 0
    ]
    scored.sort(key=lambda pair: (-pair[1], pair[0]))
    return scored[:first]
