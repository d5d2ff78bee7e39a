"""Graphviz DOT export of the circuit (in-circuit components and edges), for drawing.

Only the circuit is drawn: a dense graph of 32,000 edges is not a picture. Edge width
follows |score| relative to the largest, colour its sign (blue positive, red negative);
the receiving input of a head is the edge label. pydot does the quoting.
"""

from __future__ import annotations

from typing import Any

import pydot

from circuitreg.schema import CircuitDocument, ComponentKind

_SHAPES = {
    ComponentKind.EMBED: "invhouse",
    ComponentKind.ATTN_HEAD: "ellipse",
    ComponentKind.MLP: "box",
    ComponentKind.LOGITS: "house",
    ComponentKind.FEATURE: "diamond",
}


Key = tuple[str, int | None, str | None]  # a node: name, position, span


def _node_id(key: Key) -> str:
    """``name``, or ``name@position`` / ``name@span`` for a node at a position (issue 18)."""
    name, position, span = key
    at = span if span is not None else position
    return name if at is None else f"{name}@{at}"


def write_dot(doc: CircuitDocument) -> bytes:
    """A ``digraph`` of the circuit with the document id, model and task as its label."""
    graph = pydot.Dot(
        "circuit",
        graph_type="digraph",
        rankdir="BT",
        label=f"{doc.id} - {doc.model.name} / {doc.task.name} / {doc.method.name}",
    )
    comps = doc.circuit_components()
    edges = doc.circuit_edges()
    present: set[Key] = {c.key for c in comps}
    for comp in comps:
        attrs: dict[str, Any] = {
            "shape": _SHAPES[comp.kind],
            "label": _node_id(comp.key),
        }
        if comp.score is not None:
            attrs["score"] = repr(comp.score)
        graph.add_node(pydot.Node(_node_id(comp.key), **attrs))
    largest = max((abs(e.score) for e in edges if e.score is not None), default=0.0) or 1.0
    for edge in edges:
        ends = []
        for name in (edge.source, edge.target):
            key: Key = (name, edge.position, edge.span)
            # A positional circuit's positional edges stay at their position (drawn over
            # it); an imported edge at a position falls back to its unpositioned node.
            if key not in present and doc.positions is None and (name, None, None) in present:
                key = (name, None, None)
            if key not in present:  # an edge end outside the circuit's nodes
                graph.add_node(pydot.Node(_node_id(key), style="dashed"))
                present.add(key)
            ends.append(_node_id(key))
        attrs = {"receiver": edge.receiver.value} if edge.receiver else {}
        if edge.receiver:
            attrs["label"] = edge.receiver.value
        if edge.score is not None:
            attrs["score"] = repr(edge.score)
            attrs["color"] = "blue" if edge.score >= 0 else "red"
            attrs["penwidth"] = f"{0.5 + 4.5 * abs(edge.score) / largest:.3f}"
        graph.add_edge(pydot.Edge(ends[0], ends[1], **attrs))
    return graph.to_string().encode()
