"""Neuronpedia / circuit-tracer attribution graphs: mapping, refusals, aggregation, export."""

from __future__ import annotations

import json
from typing import Any

import pytest

from circuitreg.schema import CircuitDocument, Component, Edge, MethodRef, ModelRef, TaskRef
from circuitreg.services.interchange import (
    ImportOptions,
    InterchangeError,
    UnrepresentableError,
    detect_format,
    read_document,
    write_document,
)


def _graph(links: list[dict[str, Any]], extra_nodes: list[dict[str, Any]] | None = None) -> bytes:
    """A small graph as circuit-tracer writes it (layers as strings, paired feature codes)."""
    nodes = [
        {"node_id": "E_651_3", "feature": 3, "layer": "E", "ctx_idx": 3,
         "feature_type": "embedding", "jsNodeId": "E_651-3", "clerp": ""},
        {"node_id": "0_812_3", "feature": 331893, "layer": "0", "ctx_idx": 3,
         "feature_type": "cross layer transcoder", "jsNodeId": "0_812-0", "influence": 0.4,
         "activation": 2.5},
        {"node_id": "1_-1_3", "feature": -1, "layer": "1", "ctx_idx": 3,
         "feature_type": "mlp reconstruction error", "jsNodeId": "1_-1-3"},
        {"node_id": "3_9_3", "feature": 9, "layer": "3", "ctx_idx": 3, "feature_type": "logit",
         "jsNodeId": "L_9-3", "token_prob": 0.7, "is_target_logit": True},
        {"node_id": "1_77_3", "feature": 5, "layer": "1", "ctx_idx": 3,
         "feature_type": "cross layer transcoder", "jsNodeId": "1_77-0"},
        *(extra_nodes or []),
    ]  # fmt: skip
    doc = {
        "metadata": {"slug": "demo", "scan": "gemma-2-2b", "prompt_tokens": ["a"], "prompt": "a"},
        "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "",
                    "sg_pos": ""},
        "nodes": nodes,
        "links": links,
    }  # fmt: skip
    return json.dumps(doc).encode()


LINKS = [
    {"source": "E_651_3", "target": "0_812_3", "weight": 1.25},
    {"source": "0_812_3", "target": "1_77_3", "weight": -0.5},
    {"source": "1_-1_3", "target": "3_9_3", "weight": 0.75},
    {"source": "1_77_3", "target": "3_9_3", "weight": 2.0},
]


def test_attribution_graph_maps_nodes_and_links() -> None:
    data = _graph(LINKS)
    assert detect_format(data) == "neuronpedia"
    doc = read_document(data, options=ImportOptions(task="capitals"))
    assert doc.model.name == "gemma-2-2b"
    assert doc.method.name == "attribution-graph"
    assert {(c.name, c.position, c.score) for c in doc.components} == {
        ("input", 3, None), ("f0.812", 3, 0.4), ("m1", 3, None), ("logits", 3, None),
        ("f1.77", 3, None),
    }  # fmt: skip
    assert {(e.name, e.position, e.score) for e in doc.edges} == {
        ("input->f0.812", 3, 1.25), ("f0.812->f1.77", 3, -0.5), ("m1->logits", 3, 0.75),
        ("f1.77->logits", 3, 2.0),
    }  # fmt: skip


def test_export_then_import_gives_the_same_document() -> None:
    doc = read_document(_graph(LINKS), "neuronpedia", ImportOptions(n_layers=2, n_heads=8))
    back = read_document(write_document(doc, "neuronpedia"), "neuronpedia",
                         ImportOptions(n_layers=2, n_heads=8))  # fmt: skip
    assert back.components == doc.components and back.edges == doc.edges
    assert back.id == doc.id


def test_cross_position_links_are_refused_unless_aggregated() -> None:
    later = {"node_id": "1_77_5", "feature": 5, "layer": "1", "ctx_idx": 5,
             "feature_type": "cross layer transcoder", "jsNodeId": "1_77-0"}  # fmt: skip
    links = [*LINKS, {"source": "0_812_3", "target": "1_77_5", "weight": 0.25}]
    with pytest.raises(UnrepresentableError, match="from position 3 to position 5") as caught:
        read_document(_graph(links, [later]), "neuronpedia")
    assert caught.value.location == "$.links[4]"
    merged = read_document(_graph(links, [later]), "neuronpedia", ImportOptions(aggregate=True))
    scores = {e.name: e.score for e in merged.edges}
    assert scores["f0.812->f1.77"] == -0.5 + 0.25
    assert all(e.position is None for e in merged.edges)
    assert len([c for c in merged.components if c.name == "f1.77"]) == 1


def test_two_logit_tokens_at_one_position_are_refused() -> None:
    other = {"node_id": "3_17_3", "feature": 17, "layer": "3", "ctx_idx": 3,
             "feature_type": "logit", "jsNodeId": "L_17-3"}  # fmt: skip
    with pytest.raises(UnrepresentableError, match=r"this node and \$\.nodes\[3\] are both"):
        read_document(_graph(LINKS, [other]), "neuronpedia")


def test_unmappable_nodes_and_bad_links_say_where() -> None:
    lorsa = {"node_id": "2_4_3", "feature": 4, "layer": "2", "ctx_idx": 3,
             "feature_type": "lorsa", "jsNodeId": "2_4-0"}  # fmt: skip
    with pytest.raises(InterchangeError, match="feature_type 'lorsa' has no") as caught:
        read_document(_graph(LINKS, [lorsa]), "neuronpedia")
    assert caught.value.location == "$.nodes[5].feature_type"
    dangling = [*LINKS, {"source": "E_651_3", "target": "9_9_9", "weight": 1.0}]
    with pytest.raises(InterchangeError, match="'9_9_9' is not a node_id") as caught:
        read_document(_graph(dangling), "neuronpedia")
    assert caught.value.location == "$.links[4].target"
    bad_weight = [{"source": "E_651_3", "target": "0_812_3", "weight": "1.0"}]
    with pytest.raises(InterchangeError, match="expected a number") as caught:
        read_document(_graph(bad_weight), "neuronpedia")
    assert caught.value.location == "$.links[0].weight"


def test_heads_and_unpositioned_components_cannot_be_exported() -> None:
    doc = CircuitDocument(
        model=ModelRef(name="m", n_layers=1, n_heads=1),
        task=TaskRef(name="t"),
        method=MethodRef(name="x"),
        components=[Component.from_name("input", position=0), Component.from_name("a0.h0")],
        edges=[Edge.from_name("input->a0.h0<q>", score=1.0)],
    )
    with pytest.raises(UnrepresentableError, match="no attention-head nodes"):
        write_document(doc, "neuronpedia")
