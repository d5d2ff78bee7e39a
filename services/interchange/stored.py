"""Circuits between files and the stores: import into, and export out of, the registry.

The graph store keeps a circuit's own edges; the dense scores of every edge go to the
artifact store and the circuit row keeps their URI. ``store_document`` writes both (the
artifact first, removed again if the circuit cannot be stored, so a failure leaves
nothing behind); ``load_document`` merges them back into the full document that exports
such as MIB need.
"""

from __future__ import annotations

from dataclasses import dataclass

from circuitreg.schema import CircuitDocument, Component, Edge
from circuitreg.services.artifacts import ArtifactRef, ArtifactStore
from circuitreg.services.stores.positions import component_order
from circuitreg.services.stores.types import GraphStore

from .base import dense_key, parse_dense_key
from .errors import InterchangeError


@dataclass(frozen=True)
class StoredCircuit:
    """What ``store_document`` wrote: the circuit id and its dense-score artifact, if any."""

    circuit_id: str
    dense_scores: ArtifactRef | None


def dense_scores(doc: CircuitDocument) -> dict[str, float]:
    """Every scored edge's score by dense key (``name`` or ``name@position``), in order."""
    return {dense_key(e): e.score for e in doc.edges if e.score is not None}


def store_document(
    store: GraphStore,
    artifacts: ArtifactStore,
    doc: CircuitDocument,
    *,
    job_id: str | None = None,
) -> StoredCircuit:
    """Store the circuit and, when it scores edges outside the circuit, its dense scores."""
    scores = dense_scores(doc)
    ref: ArtifactRef | None = None
    created = False
    if scores and any(not e.in_circuit for e in doc.edges):
        names = list(scores)
        ref, created = artifacts.write_scores(doc.id, names, [scores[n] for n in names])
    try:
        circuit_id = store.put_circuit(
            doc, job_id=job_id, dense_scores_uri=ref.uri if ref is not None else None
        )
    except BaseException:
        if ref is not None and created:
            artifacts.delete(ref)
        raise
    return StoredCircuit(circuit_id, ref)


def merge_dense(stored: CircuitDocument, dense: dict[str, float]) -> CircuitDocument:
    """The full document: stored circuit edges plus every densely scored edge outside it."""
    in_circuit = {dense_key(e): e for e in stored.edges}
    edges: list[Edge] = []
    for key, score in dense.items():
        kept = in_circuit.pop(key, None)
        if kept is not None:
            edges.append(kept.model_copy(update={"score": score}))
            continue
        name, position, span = parse_dense_key(key)
        edges.append(
            Edge.from_name(name, score=score, in_circuit=False, position=position, span=span)
        )
    edges.extend(in_circuit.values())
    comps = {c.key: c for c in stored.components}
    names = {c.name for c in stored.components}
    for edge in edges:
        for end in (edge.source, edge.target):
            if end not in names:
                comps[(end, None, None)] = Component.from_name(end, in_circuit=False)
                names.add(end)
    ordered = sorted(comps.values(), key=component_order)
    return stored.model_copy(update={"components": tuple(ordered), "edges": tuple(edges)})


def load_document(store: GraphStore, artifacts: ArtifactStore, ref: str) -> CircuitDocument:
    """The stored circuit (by id or alias) with its dense scores merged back in."""
    circuit_id = store.resolve(ref)
    doc = store.get_circuit(circuit_id) if circuit_id else None
    summary = store.get_summary(circuit_id) if circuit_id else None
    if doc is None or summary is None:
        raise InterchangeError(f"no stored circuit {ref!r}", location="store")
    if summary.dense_scores_uri is None:
        return doc
    return merge_dense(doc, artifacts.get_scores(summary.dense_scores_uri))
