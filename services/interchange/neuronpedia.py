"""Neuronpedia / circuit-tracer attribution-graph JSON (``nodes``, ``links``, ``metadata``).

Node mapping (``feature_type``): ``embedding`` -> ``input``, ``cross layer transcoder`` /
``transcoder`` -> feature ``f{layer}.{index}`` (index read from ``node_id``
``{layer}_{index}_{pos}``, since newer files put a pairing code in ``feature``), ``mlp
reconstruction error`` -> ``m{layer}`` (the part of MLP ``layer`` the features do not
explain), ``logit`` -> ``logits``; each at position ``ctx_idx``. A link is an edge with
the link's weight as score.

What cannot be represented is refused: attention-feature (``lorsa``) nodes, several nodes
mapping to one component at one position (logit nodes for different tokens), and links
between different positions (a circuitreg edge carries one position). ``aggregate=True``
drops positions instead and sums the weights of links that become the same edge: a lossy
view, asked for explicitly. Attention heads have no attribution-graph node, so documents
with heads cannot be exported.
"""

from __future__ import annotations

from typing import Any

from circuitreg.schema import (
    CircuitDocument,
    Component,
    ComponentKind,
    Edge,
    node_order_key,
)

from .base import ImportOptions, build_document, error_text
from .errors import InterchangeError, UnrepresentableError
from .jsonread import as_float, as_int, as_list, as_object, as_str, child, dumps, parse_json
from .jsonread import require as need
from .shapes import infer_shape, inferred_note

_FEATURE_TYPES = ("cross layer transcoder", "transcoder", "per layer transcoder")


def _component_name(node: dict[str, Any], path: str) -> str:
    kind = as_str(need(node, "feature_type", path), child(path, "feature_type"))
    if kind == "embedding":
        return "input"
    if kind == "logit":
        return "logits"
    layer = as_int(_int_like(need(node, "layer", path)), child(path, "layer"))
    if kind == "mlp reconstruction error":
        return f"m{layer}"
    if kind in _FEATURE_TYPES:
        node_id = as_str(need(node, "node_id", path), child(path, "node_id"))
        parts = node_id.split("_")
        if len(parts) != 3 or not parts[1].isdigit() or len(parts[1]) > 9:
            raise InterchangeError(
                f"feature node_id {node_id!r} is not '{{layer}}_{{index}}_{{position}}'",
                location=child(path, "node_id"),
            )
        return f"f{layer}.{int(parts[1])}"
    raise InterchangeError(
        f"feature_type {kind!r} has no circuitreg component (known: embedding, logit, "
        f"mlp reconstruction error, {', '.join(_FEATURE_TYPES)})",
        location=child(path, "feature_type"),
    )


def _int_like(value: Any) -> Any:
    """Neuronpedia writes layers as strings ("3"); accept digit strings as integers."""
    if isinstance(value, str) and value.isdigit() and len(value) <= 9:  # int() refuses 4,300
        return int(value)
    return value


def read_neuronpedia(data: bytes, options: ImportOptions) -> CircuitDocument:
    """Import an attribution graph; see the module docstring for the mapping."""
    root = as_object(parse_json(data), "$")
    meta = as_object(root.get("metadata", {}), "$.metadata")
    by_id, comps = _read_nodes(root, options.aggregate)
    edges = _read_links(root, by_id)
    scan = meta.get("scan")
    return build_document(
        options=options,
        format_name="neuronpedia",
        model_defaults=infer_shape(comps.values(), options, location="$.nodes"),
        components=comps.values(),
        edges=edges,
        default_model=scan if isinstance(scan, str) and scan else "unknown",
        default_method="attribution-graph",
        extra={**inferred_note(options), "slug": meta.get("slug")},
    )


_Key = tuple[str, int | None]
"""A component's name and position (None when positions are aggregated away)."""


def _read_nodes(
    root: dict[str, Any], aggregate: bool
) -> tuple[dict[str, _Key], dict[_Key, Component]]:
    """The graph's nodes as components, and which component each ``node_id`` became.

    Without ``aggregate`` two nodes that are one component at one position are refused
    (naming the first), since merging them would silently drop one's influence.
    """
    by_id: dict[str, _Key] = {}
    comps: dict[_Key, Component] = {}
    first_path: dict[_Key, str] = {}
    for index, raw in enumerate(as_list(need(root, "nodes", "$"), "$.nodes")):
        path = child("$.nodes", index)
        node = as_object(raw, path)
        node_id = as_str(need(node, "node_id", path), child(path, "node_id"))
        name = _component_name(node, path)
        position = None
        if not aggregate:
            position = as_int(need(node, "ctx_idx", path), child(path, "ctx_idx"))
        key = (name, position)
        if key in comps and not aggregate:
            raise UnrepresentableError(
                f"this node and {first_path[key]} are both {name!r} at position {position}; "
                "circuitreg has one component per name and position (import with "
                "aggregate to merge them, dropping positions)",
                location=path,
            )
        comps.setdefault(key, _node_component(node, path, key, aggregate))
        first_path.setdefault(key, path)
        by_id[node_id] = key
    return by_id, comps


def _node_component(node: dict[str, Any], path: str, key: _Key, aggregate: bool) -> Component:
    """The component of one node, scored by its influence (none once positions are summed,
    as one position's influence is not the aggregated component's)."""
    influence = node.get("influence")
    score = None
    if influence is not None and not aggregate:
        score = as_float(influence, child(path, "influence"))
    try:
        return Component.from_name(key[0], position=key[1], score=score)
    except ValueError as exc:
        raise InterchangeError(error_text(exc), location=path) from None


def _read_links(root: dict[str, Any], by_id: dict[str, _Key]) -> list[Edge]:
    """The graph's links as edges; links that become the same edge add their weights."""
    weights: dict[tuple[_Key, _Key], float] = {}
    for index, raw in enumerate(as_list(need(root, "links", "$"), "$.links")):
        path = child("$.links", index)
        source, target, weight = _read_link(as_object(raw, path), path, by_id)
        weights[(source, target)] = weights.get((source, target), 0.0) + weight
    return [Edge(source=s[0], target=t[0], score=w, position=s[1]) for (s, t), w in weights.items()]


def _read_link(link: dict[str, Any], path: str, by_id: dict[str, _Key]) -> tuple[_Key, _Key, float]:
    """One link's ends and weight, refusing what a circuitreg edge cannot be: a link across
    positions, or one that does not go forward through the model."""
    ends = []
    for end in ("source", "target"):
        ref = as_str(need(link, end, path), child(path, end))
        if ref not in by_id:
            raise InterchangeError(f"{end} {ref!r} is not a node_id", location=child(path, end))
        ends.append(by_id[ref])
    source, target = ends
    weight = as_float(need(link, "weight", path), child(path, "weight"))
    if source[1] != target[1]:
        raise UnrepresentableError(
            f"the link goes from position {source[1]} to position {target[1]}; a "
            "circuitreg edge has one position (import with aggregate to drop positions)",
            location=path,
        )
    if node_order_key(source[0]) >= node_order_key(target[0]):
        raise UnrepresentableError(
            f"link {source[0]} -> {target[0]} does not go forward through the model",
            location=path,
        )
    return source, target, weight


def _node_entry(comp: Component, n_layers: int) -> dict[str, Any]:
    pos = comp.position
    if comp.kind is ComponentKind.EMBED:
        node_id, layer, feature, kind = f"E_{pos}", "E", pos, "embedding"
    elif comp.kind is ComponentKind.LOGITS:
        node_id, layer, feature, kind = f"L_{pos}", str(n_layers + 1), 0, "logit"
    elif comp.kind is ComponentKind.MLP:
        node_id, layer, feature, kind = (
            f"{comp.layer}_-1_{pos}",
            str(comp.layer),
            -1,
            ("mlp reconstruction error"),
        )
    else:
        index = int(comp.name.split(".")[1])
        node_id, layer, feature = f"{comp.layer}_{index}_{pos}", str(comp.layer), index
        kind = "cross layer transcoder"
    entry: dict[str, Any] = {
        "node_id": node_id,
        "feature": feature,
        "layer": layer,
        "ctx_idx": pos,
        "feature_type": kind,
        "jsNodeId": node_id,
        "clerp": "",
    }
    if comp.score is not None:
        entry["influence"] = comp.score
    return entry


def write_neuronpedia(doc: CircuitDocument) -> bytes:
    """Export the circuit's components and edges as an attribution graph."""
    nodes: dict[tuple[str, int | None, str | None], dict[str, Any]] = {}
    for comp in doc.circuit_components():
        if comp.kind is ComponentKind.ATTN_HEAD:
            raise UnrepresentableError(
                "attribution graphs have no attention-head nodes",
                location=f"component {comp.name!r}",
            )
        if comp.position is None:
            raise UnrepresentableError(
                "attribution-graph nodes need a token position (ctx_idx)",
                location=f"component {comp.name!r}",
            )
        nodes[comp.key] = _node_entry(comp, doc.model.n_layers)
    links = []
    for edge in doc.circuit_edges():
        ends = [(edge.source, edge.position, edge.span), (edge.target, edge.position, edge.span)]
        missing = [e for e in ends if e not in nodes]
        if missing:
            raise UnrepresentableError(
                f"no in-circuit component {missing[0][0]!r} at position {missing[0][1]}",
                location=f"edge {edge.name!r} (position {edge.position})",
            )
        if edge.score is None:
            raise UnrepresentableError("links need a weight", location=f"edge {edge.name!r}")
        links.append(
            {"source": nodes[ends[0]]["node_id"], "target": nodes[ends[1]]["node_id"],
             "weight": edge.score}
        )  # fmt: skip
    metadata = {
        "slug": doc.id,
        "scan": doc.model.name,
        "prompt_tokens": [],
        "prompt": "",
        "schema_version": 1,
    }
    qparams = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    return dumps({"metadata": metadata, "qParams": qparams, "nodes": list(nodes.values()),
                  "links": links})  # fmt: skip


def sniff_neuronpedia(data: bytes, payload: Any) -> bool:
    """A JSON object with ``nodes`` and ``links`` lists."""
    return (
        isinstance(payload, dict)
        and isinstance(payload.get("nodes"), list)
        and isinstance(payload.get("links"), list)
    )
