"""GraphML through networkx: a full-fidelity export that re-imports to the same document,
and an import of plain GraphML graphs whose nodes are canonical component names.

Our own exports carry the document's metadata as graph attributes (JSON strings), every
component and edge with its ``in_circuit`` flag, and each edge's original ``order`` (a
multigraph's edge iteration is grouped by source, not file order). Other GraphML files need
only node ids (or a ``name`` attribute) that are canonical names; edges into heads need a
``receiver`` attribute; ``score``, ``in_circuit`` and ``position`` are optional.

Positions (issue 18): a positional circuit's export keeps its position axis (the graph
attribute ``positions``) and every node and edge at its position and span (nodes
``a1.h2@S2``, ``a1.h2@4@S2``, edges with ``position``/``span`` attributes), so it re-imports
to the same document.
"""

from __future__ import annotations

import io
import json
from typing import Any
from xml.etree.ElementTree import ParseError

import networkx as nx
from pydantic import ValidationError

from circuitreg.schema import (
    CanonicalNameError,
    CircuitDocument,
    Component,
    Edge,
    Receiver,
)

from .base import ImportOptions, build_document, dense_key, error_text, validation_message
from .errors import InterchangeError
from .shapes import infer_shape, inferred_note

_META = ("model", "task", "method", "labels", "validation", "provenance")
_AXIS = "positions"  # the position axis, a graph attribute of positional circuits only

Place = tuple[int | None, str | None]  # (position, span) of a component or edge


def _node_key(name: str, place: Place) -> str:
    """``name``, ``name@position``, ``name@span`` or ``name@position@span``."""
    position, span = place
    parts = [
        name,
        *([] if position is None else [str(position)]),
        *([] if span is None else [span]),
    ]
    return "@".join(parts)


def write_graphml(doc: CircuitDocument) -> bytes:
    """Every component and edge, with the document's metadata as graph attributes."""
    graph = nx.MultiDiGraph()
    data = doc.model_dump(mode="json")
    graph.graph["circuitreg_format"] = doc.format
    graph.graph["circuit_id"] = doc.id
    for key in _META:
        graph.graph[key] = json.dumps(data[key])
    if doc.positions is not None:
        graph.graph[_AXIS] = json.dumps(data[_AXIS])
    graph.graph["ablation"] = doc.ablation
    graph.graph["metric"] = doc.metric
    if doc.seed is not None:
        graph.graph["seed"] = doc.seed
    for comp in doc.components:
        attrs = {k: v for k, v in comp.model_dump(mode="json").items() if v is not None}
        graph.add_node(_node_key(comp.name, (comp.position, comp.span)), **attrs)
    keys_by_name: dict[str, list[Place]] = {}
    for comp in doc.components:
        keys_by_name.setdefault(comp.name, []).append((comp.position, comp.span))
    for order, edge in enumerate(doc.edges):
        attrs = {
            k: v
            for k, v in edge.model_dump(mode="json").items()
            if v is not None and k not in ("source", "target")
        }
        graph.add_edge(
            _endpoint(keys_by_name, edge.source, (edge.position, edge.span)),
            _endpoint(keys_by_name, edge.target, (edge.position, edge.span)),
            key=dense_key(edge),
            order=order,
            **attrs,
        )
    out = io.BytesIO()
    nx.write_graphml(graph, out, encoding="utf-8")
    return out.getvalue()


def _endpoint(keys_by_name: dict[str, list[Place]], name: str, place: Place) -> str:
    """The node an edge end attaches to: same position and span if present, else
    unpositioned (else the first place it has; re-import reads edge ends by name)."""
    places = keys_by_name[name]
    if place in places:
        return _node_key(name, place)
    return _node_key(name, (None, None) if (None, None) in places else places[0])


def _parse(data: bytes) -> nx.MultiDiGraph:
    try:
        graph = nx.read_graphml(io.BytesIO(data), force_multigraph=True)
    except ParseError as exc:
        line, column = exc.position
        raise InterchangeError(
            f"invalid XML: {exc}", location=f"line {line} column {column + 1}"
        ) from None
    except Exception as exc:  # networkx raises many types for malformed GraphML
        raise InterchangeError(f"invalid GraphML: {exc!r}", location="graphml") from None
    if not graph.is_directed():
        raise InterchangeError("the graph is undirected; circuits are directed", location="graph")
    return graph


def _own_document(graph: nx.MultiDiGraph) -> CircuitDocument:
    """Rebuild a document from one of our own exports."""
    meta = graph.graph
    try:
        doc: dict[str, Any] = {k: json.loads(meta[k]) for k in _META}
    except (KeyError, json.JSONDecodeError, RecursionError) as exc:
        raise InterchangeError(f"bad circuitreg metadata: {exc}", location="graph data") from None
    doc.update(format=meta["circuitreg_format"], ablation=meta.get("ablation", "resample"))
    doc.update(metric=meta.get("metric", "logit_diff"), seed=meta.get("seed"))
    if _AXIS in meta:
        try:
            doc[_AXIS] = json.loads(meta[_AXIS])
        except (json.JSONDecodeError, RecursionError) as exc:
            raise InterchangeError(f"bad position axis: {exc}", location="graph data") from None
    for node, attrs in graph.nodes(data=True):
        if "name" not in attrs:
            raise InterchangeError("node has no 'name' attribute", location=f"node {node!r}")
    doc["components"] = [dict(attrs) for _, attrs in graph.nodes(data=True)]
    edges = sorted(graph.edges(data=True), key=lambda e: e[2].get("order", 0))
    doc["edges"] = [
        {
            "source": graph.nodes[u]["name"],
            "target": graph.nodes[v]["name"],
            **{k: val for k, val in attrs.items() if k != "order"},
        }
        for u, v, attrs in edges
    ]
    try:
        return CircuitDocument.model_validate(doc)
    except ValidationError as exc:
        location, message = validation_message(exc)
        raise InterchangeError(message, location=f"document {location}".strip()) from None


def _plain_document(graph: nx.MultiDiGraph, options: ImportOptions) -> CircuitDocument:
    """A document from GraphML that someone else wrote: canonical names required."""
    comps: dict[str, Component] = {}
    for node, attrs in graph.nodes(data=True):
        where = f"node {node!r}"
        try:
            comps[node] = Component.from_name(
                str(attrs.get("name", node)),
                position=attrs.get("position"),
                score=attrs.get("score"),
                in_circuit=bool(attrs.get("in_circuit", True)),
            )
        except (CanonicalNameError, ValidationError, ValueError) as exc:
            raise InterchangeError(error_text(exc), location=where) from None
    edges: list[Edge] = []
    for u, v, key, attrs in graph.edges(keys=True, data=True):
        where = f"edge {u!r} -> {v!r} (key {key!r})"
        try:
            receiver = attrs.get("receiver")
            edges.append(
                Edge(
                    source=comps[u].name,
                    target=comps[v].name,
                    receiver=Receiver(receiver) if receiver else None,
                    score=attrs.get("score"),
                    in_circuit=bool(attrs.get("in_circuit", True)),
                    position=attrs.get("position"),
                )
            )
        except (CanonicalNameError, ValidationError, ValueError) as exc:
            raise InterchangeError(error_text(exc), location=where) from None
    shape = infer_shape(comps.values(), options, location="graph")
    return build_document(
        options=options,
        format_name="graphml",
        model_defaults=shape,
        components=comps.values(),
        edges=edges,
        extra=inferred_note(options),
    )


def read_graphml(data: bytes, options: ImportOptions) -> CircuitDocument:
    """Import GraphML: our own exports exactly, other graphs by canonical node names."""
    graph = _parse(data)
    if "circuitreg_format" in graph.graph:
        if options.given():
            raise InterchangeError(
                "this GraphML was exported by circuitreg and names its own metadata; "
                f"drop the options {sorted(options.given())}",
                location="graph data",
            )
        return _own_document(graph)
    return _plain_document(graph, options)


def sniff_graphml(data: bytes, payload: Any) -> bool:
    """XML whose head mentions a graphml element."""
    return data.lstrip()[:1] == b"<" and b"<graphml" in data[:4096]
