"""Each circuit's edge list as array properties of its (:Circuit) node, for set questions.

Shared subcircuits, diffs and evolution ask which edges each of many circuits holds. Read from
the FLOWS relationships that is one relationship and five property reads per (circuit, edge):
over 1,000 circuits of 1,000 edges, 4-6 s on Neo4j on a 2-core machine, most of it in the
server's relationship and property stores (bench/store_bench.py). The same facts as three
arrays on each circuit node (``edge_keys`` with ``edge_scores`` alongside, and
``unscored_keys``) are read per circuit, and aggregated here in Python. The FLOWS
relationships stay the graph that patterns (motifs, paths, component usage) walk. A circuit
written before the arrays existed has none: its edges are read from FLOWS instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import chain
from typing import Any

from circuitreg.schema import Edge


def flow_key(edge: Edge) -> str:
    """The key of an edge at its position and span (also the FLOWS relationship's key):
    ``name@position``, and ``@span`` after it for an edge at a span."""
    key = f"{edge.name}@{'' if edge.position is None else edge.position}"
    return key if edge.span is None else f"{key}@{edge.span}"


def edge_of(key: str) -> str:
    """The canonical edge name of a key (edge names hold no ``@``; a span may)."""
    return key.split("@", 1)[0]


def array_props(edges: Sequence[Edge]) -> dict[str, list[Any]]:
    """The circuit node's array properties for its in-circuit edges."""
    scored = [e for e in edges if e.score is not None]
    return {
        "edge_keys": [flow_key(e) for e in scored],
        "edge_scores": [float(e.score) for e in scored if e.score is not None],
        "unscored_keys": [flow_key(e) for e in edges if e.score is None],
    }


Triple = tuple[str, str, float | None]  # (edge name, circuit id, score at one position)


def candidate_keys(rows: Sequence[Mapping[str, Any]], min_support: int) -> set[str]:
    """Keys whose edge appears in at least ``min_support`` circuits, counted in C.

    Counting keys over-counts a circuit that holds one edge at two positions, so this is a
    superset of the supported edges' keys; the exact support is counted afterwards.
    """
    counts = Counter(chain.from_iterable(chain(r["keys"], r["unscored"]) for r in rows))
    by_edge: Counter[str] = Counter()
    for key, n in counts.items():
        by_edge[edge_of(key)] += n
    return {key for key in counts if by_edge[edge_of(key)] >= min_support}


def array_triples(rows: Sequence[Mapping[str, Any]], keep: set[str]) -> Iterator[Triple]:
    """(edge, circuit, score) for every kept key of every circuit's arrays."""
    for row in rows:
        circuit = str(row["id"])
        for key, score in zip(row["keys"], row["scores"], strict=True):
            if key in keep:
                yield edge_of(key), circuit, float(score)
        for key in row["unscored"]:
            if key in keep:
                yield edge_of(key), circuit, None


def flow_triples(rows: Iterable[Mapping[str, Any]]) -> Iterator[Triple]:
    """The same triples from ``queries.shared_edges`` rows (circuits without arrays)."""
    for row in rows:
        for circuit, score in row["per"]:
            yield str(row["edge"]), str(circuit), None if score is None else float(score)


def importances(
    triples: Iterable[Triple], min_importance: float
) -> dict[str, dict[str, float | None]]:
    """Edge -> {circuit: importance summed over positions}, at or above ``min_importance``."""
    summed: dict[str, dict[str, float | None]] = {}
    for edge, circuit, score in triples:
        per = summed.setdefault(edge, {})
        before = per.get(circuit)
        if score is None:
            per.setdefault(circuit, None)
        else:
            per[circuit] = score + (before or 0.0)
    if min_importance <= 0:
        return summed
    out: dict[str, dict[str, float | None]] = {}
    for edge, per in summed.items():
        # an unscored edge has no |score| to compare
        kept = {c: v for c, v in per.items() if v is not None and abs(v) >= min_importance}
        if kept:
            out[edge] = dict(kept)
    return out


def edge_ends(names: Iterable[str]) -> dict[str, tuple[str, str, str | None]]:
    """(source, target, receiver) of each canonical edge name."""
    ends = {}
    for name in names:
        edge = Edge.from_name(name)
        ends[name] = (
            edge.source,
            edge.target,
            None if edge.receiver is None else edge.receiver.value,
        )
    return ends
