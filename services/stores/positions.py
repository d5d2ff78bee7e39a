"""Positions in the stores (issue 18): what of a positional circuit is its graph, what sits
beside it, and the ordering, checks and shaping every backend shares for position queries.

A document with a position axis holds every summed edge plus the positional edges kept,
which refine them (``on_axis``): the stores keep the summed ones as the circuit's graph, which
shared subcircuits, diffs, embeddings, paths and motifs read, and index every positioned
entry beside it for "edges at END", "this head at S2" and "this edge at position 7".
"""

from __future__ import annotations

from collections.abc import Iterable

from circuitreg.schema import CircuitDocument, Component, Edge, node_order_key

from .common import StoreError, stored_components


def on_axis(doc: CircuitDocument, entry: Component | Edge) -> bool:
    """Whether ``entry`` is a position of the document's position axis (issue 18).

    A document with an axis holds every summed edge plus the positional edges kept, which
    refine them; those are stored beside the circuit's graph, so that what a store sums,
    compares and walks (shared subcircuits, diffs, embeddings, paths, motifs) sees each
    edge once. A positioned entry of a document without an axis (an AutoCircuit import,
    say) is one term of its edge's sum and stays in the graph, as it always has.
    """
    return doc.positions is not None and entry.positional


def graph_components(doc: CircuitDocument) -> list[Component]:
    """The stored components of the circuit's graph (all but the axis's positional ones)."""
    return [c for c in stored_components(doc) if not on_axis(doc, c)]


def graph_edges(doc: CircuitDocument) -> tuple[Edge, ...]:
    """The in-circuit edges of the circuit's graph (all but the axis's positional ones)."""
    return tuple(e for e in doc.circuit_edges() if not on_axis(doc, e))


def positional_components(doc: CircuitDocument) -> list[Component]:
    """Stored components at a position or span: what the position queries look up."""
    return [c for c in stored_components(doc) if c.positional]


def positional_edges(doc: CircuitDocument) -> tuple[Edge, ...]:
    """In-circuit edges at a position or span: what the position queries look up.

    For a document without an axis these are also graph edges (see ``on_axis``).
    """
    return tuple(e for e in doc.circuit_edges() if e.positional)


def position_free_names(doc: CircuitDocument) -> set[str]:
    """Names whose position-free component a store writes for the positional entries to
    refer to (the graph of a positional circuit may hold a name at positions only)."""
    names = {c.name for c in positional_components(doc)}
    names.update(n for e in positional_edges(doc) for n in (e.source, e.target))
    return names


def summary_counts(doc: CircuitDocument) -> tuple[int, int]:
    """``(n_components, n_edges)`` of a summary: the circuit's graph, so a positional
    circuit is as large as its summed circuit, whatever number of positions it keeps."""
    return (
        sum(1 for c in graph_components(doc) if c.in_circuit),
        len(graph_edges(doc)),
    )


MAX_SPAN = 200
"""Longest span (position label) a store keeps."""


def check_spans(doc: CircuitDocument) -> None:
    """Refuse spans longer than the embedded store's columns hold (every backend refuses
    them alike), naming the entry, before anything is written."""
    labels = doc.positions.labels if doc.positions is not None else ()
    entries: Iterable[tuple[str, str | None]] = (
        *((f"position label {label!r}", label) for label in labels),
        *((f"edge {e.name!r}", e.span) for e in doc.edges),
        *((f"component {c.name!r}", c.span) for c in doc.components),
    )
    for where, span in entries:
        if span is not None and len(span) > MAX_SPAN:
            raise StoreError(f"{where}: span of {len(span)} characters (at most {MAX_SPAN})")


def check_position_filter(position: int | None, span: str | None) -> None:
    """A position query names a token index (>= 0), a span, or both."""
    if position is None and span is None:
        raise StoreError("a position query needs a position, a span or both")
    if position is not None and position < 0:
        raise StoreError(f"position must be >= 0, got {position}")
    if span is not None and not span:
        raise StoreError("span must not be empty")


def position_order(position: int | None, span: str | None) -> tuple[int, str]:
    """How stores order entries of one name: unpositioned first, then index, then span."""
    return (-1 if position is None else position, span or "")


def edge_order(e: Edge) -> tuple[str, str, str, int, str]:
    """Documents read from a store list edges by source, target, receiver, then position."""
    return (e.source, e.target, e.receiver or "", *position_order(e.position, e.span))


def component_order(c: Component) -> tuple[tuple[int, int, int], int, str]:
    """Documents read from a store list components topologically, then by position."""
    return (node_order_key(c.name), *position_order(c.position, c.span))


def positional_matches(
    edges: Iterable[Edge],
    position: int | None,
    span: str | None,
    component: str | None = None,
) -> list[Edge]:
    """The positional edges at ``position``/``span`` (each None: any) touching
    ``component`` (None: any), in document order: how every backend shapes the answer."""
    found = [
        e
        for e in edges
        if e.positional
        and (position is None or e.position == position)
        and (span is None or e.span == span)
        and (component is None or component in (e.source, e.target))
    ]
    return sorted(found, key=edge_order)
