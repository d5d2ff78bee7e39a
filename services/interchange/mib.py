"""The MIB / EAP-IG graph JSON: ``{"cfg": ..., "nodes": {...}, "edges": {...}}``.

This is the format of the MIB circuit track and of EAP-IG's ``Graph.to_json``. Our canonical
names are MIB's, so the mapping is one to one: every node becomes a component, every edge an
edge with its score, and ``in_graph`` becomes ``in_circuit``. Key order is kept both ways, so
importing a file and exporting it again gives back the same JSON, float for float.
"""

from __future__ import annotations

from typing import Any

from circuitreg.schema import (
    CanonicalNameError,
    CircuitDocument,
    Component,
    ComponentKind,
    Edge,
    node_order_key,
    parse_edge,
)

from .base import ImportOptions, build_document
from .errors import InterchangeError, UnrepresentableError
from .jsonread import (
    as_bool,
    as_float,
    as_int,
    as_object,
    child,
    dumps,
    parse_json,
    require,
)
from .positions import summed_view

_CFG_KEYS = ("n_layers", "n_heads", "parallel_attn_mlp", "d_model")


def _read_cfg(root: dict[str, Any]) -> dict[str, Any]:
    cfg = as_object(require(root, "cfg", "$"), "$.cfg")
    shape: dict[str, Any] = {
        "n_layers": as_int(require(cfg, "n_layers", "$.cfg"), "$.cfg.n_layers"),
        "n_heads": as_int(require(cfg, "n_heads", "$.cfg"), "$.cfg.n_heads"),
        "parallel_attn_mlp": as_bool(
            cfg.get("parallel_attn_mlp", False), "$.cfg.parallel_attn_mlp"
        ),
    }
    if cfg.get("d_model") is not None:
        shape["d_model"] = as_int(cfg["d_model"], "$.cfg.d_model")
    for key in ("n_layers", "n_heads"):
        if shape[key] < 1:
            raise InterchangeError(f"must be at least 1, got {shape[key]}", location=f"$.cfg.{key}")
    return shape


def _read_node(name: str, value: Any, path: str, shape: dict[str, Any]) -> Component:
    if isinstance(value, bool):  # early EAP-IG wrote nodes as plain booleans
        in_graph, score = value, None
    else:
        entry = as_object(value, path)
        in_graph = as_bool(require(entry, "in_graph", path), child(path, "in_graph"))
        raw = entry.get("score")
        score = None if raw is None else as_float(raw, child(path, "score"))
    try:
        comp = Component.from_name(name, score=score, in_circuit=in_graph)
    except CanonicalNameError as exc:
        raise InterchangeError(str(exc), location=path) from None
    if comp.kind is ComponentKind.FEATURE:
        raise InterchangeError(f"feature node {name!r} has no place in a MIB graph", location=path)
    if comp.layer is not None and comp.layer >= shape["n_layers"]:
        raise InterchangeError(
            f"node {name!r} is in layer {comp.layer} but $.cfg.n_layers is {shape['n_layers']}",
            location=path,
        )
    if comp.head is not None and comp.head >= shape["n_heads"]:
        raise InterchangeError(
            f"node {name!r} is head {comp.head} but $.cfg.n_heads is {shape['n_heads']}",
            location=path,
        )
    return comp


def _read_edge(name: str, value: Any, path: str, order: dict[str, tuple[int, int, int]]) -> Edge:
    entry = as_object(value, path)
    in_graph = as_bool(require(entry, "in_graph", path), child(path, "in_graph"))
    raw = require(entry, "score", path)
    score = None if raw is None else as_float(raw, child(path, "score"))
    try:
        parsed = parse_edge(name)
    except CanonicalNameError as exc:
        raise InterchangeError(str(exc), location=path) from None
    for end in (parsed.source, parsed.target):
        if end not in order:
            raise InterchangeError(
                f"edge {name!r} names node {end!r}, which is not in $.nodes", location=path
            )
    if order[parsed.source] >= order[parsed.target]:
        raise InterchangeError(
            f"edge {name!r} does not go forward through the model", location=path
        )
    return Edge(
        source=parsed.source,
        target=parsed.target,
        receiver=parsed.receiver,
        score=score,
        in_circuit=in_graph,
    )


def read_mib(data: bytes, options: ImportOptions) -> CircuitDocument:
    """Import a MIB / EAP-IG graph; model, task and method come from ``options``."""
    root = as_object(parse_json(data), "$")
    shape = _read_cfg(root)
    raw_nodes = as_object(require(root, "nodes", "$"), "$.nodes")
    nodes: dict[str, Component] = {}
    for name, value in raw_nodes.items():
        nodes[name] = _read_node(name, value, child("$.nodes", name), shape)
    raw_edges = as_object(require(root, "edges", "$"), "$.edges")
    order = {name: node_order_key(name) for name in nodes}
    edges = [_read_edge(n, v, child("$.edges", n), order) for n, v in raw_edges.items()]
    shape["attn_only"] = not any(c.kind is ComponentKind.MLP for c in nodes.values())
    cfg = as_object(root["cfg"], "$.cfg")
    extra_cfg = {k: v for k, v in cfg.items() if k not in _CFG_KEYS}
    return build_document(
        options=options,
        format_name="mib",
        model_defaults=shape,
        components=nodes.values(),
        edges=edges,
        extra={"mib_cfg": cfg} if extra_cfg or list(cfg) != list(_CFG_KEYS) else None,
    )


def _cfg_for(doc: CircuitDocument) -> dict[str, Any]:
    """The ``cfg`` block: the original one when the document kept it, else from the model."""
    kept = doc.provenance.extra.get("mib_cfg")
    model = doc.model
    if isinstance(kept, dict) and (kept.get("n_layers"), kept.get("n_heads")) == (
        model.n_layers,
        model.n_heads,
    ):
        return kept
    cfg: dict[str, Any] = {
        "n_layers": model.n_layers,
        "n_heads": model.n_heads,
        "parallel_attn_mlp": model.parallel_attn_mlp,
    }
    if model.d_model is not None:
        cfg["d_model"] = model.d_model
    return cfg


def write_mib(doc: CircuitDocument) -> bytes:
    """Export to MIB JSON, summed over positions (MIB has none; ``positions.summed_view``,
    whose note ``export_notes`` gives); features and unscored edges have no MIB form."""
    view = summed_view(doc)
    nodes: dict[str, dict[str, Any]] = {}
    for comp in view.components:
        if comp.kind is ComponentKind.FEATURE:
            raise UnrepresentableError(
                "MIB graphs have no feature nodes", location=f"component {comp.name!r}"
            )
        node: dict[str, Any] = {"in_graph": comp.in_circuit}
        if comp.score is not None:
            node["score"] = comp.score
        nodes[comp.name] = node
    edges: dict[str, dict[str, Any]] = {}
    for edge in view.edges:
        if edge.score is None:
            raise UnrepresentableError(
                "MIB files give every edge a score, and this edge has none",
                location=f"edge {edge.name!r}",
            )
        edges[edge.name] = {"score": edge.score, "in_graph": edge.in_circuit}
    return dumps({"cfg": _cfg_for(doc), "nodes": nodes, "edges": edges})


def sniff_mib(data: bytes, payload: Any) -> bool:
    """A JSON object with ``cfg``, ``nodes`` and ``edges`` objects."""
    return (
        isinstance(payload, dict)
        and isinstance(payload.get("cfg"), dict)
        and isinstance(payload.get("nodes"), dict)
        and isinstance(payload.get("edges"), dict)
    )
