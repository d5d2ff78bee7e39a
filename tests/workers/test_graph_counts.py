"""The computational graph: MIB's node and edge counts and names, indexing and pruning."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from circuitreg.workers.graph import ComputationalGraph, GraphError


def test_gpt2_small_shape_has_mib_counts() -> None:
    cfg = SimpleNamespace(n_layers=12, n_heads=12, attn_only=False, parallel_attn_mlp=False)
    graph = ComputationalGraph.from_cfg(cfg)
    assert graph.n_nodes == 158
    assert graph.n_edges == 32_491


def test_gpt2_small_edge_names_equal_the_mib_file(mib_ioi_path: Path) -> None:
    data = json.loads(mib_ioi_path.read_text())
    graph = ComputationalGraph(n_layers=12, n_heads=12)
    assert set(graph.edges) == set(data["edges"])
    assert set(graph.nodes) == set(data["nodes"])


def test_attn_only_and_parallel_counts() -> None:
    attn_only = ComputationalGraph(n_layers=2, n_heads=4, attn_only=True)
    # nodes: input, 8 heads, logits; edges: layer-0 heads read input (3*4*1), layer-1 heads
    # read input + 4 heads (3*4*5), logits read all 9 writers.
    assert attn_only.n_nodes == 10
    assert attn_only.n_edges == 12 + 60 + 9
    serial = ComputationalGraph(n_layers=2, n_heads=2)
    parallel = ComputationalGraph(n_layers=2, n_heads=2, parallel_attn_mlp=True)
    # A parallel MLP does not read its own layer's heads: 2 layers x 2 heads fewer edges.
    assert serial.n_edges - parallel.n_edges == 4
    assert "a0.h0->m0" in serial.edges and "a0.h0->m0" not in parallel.edges


def test_edge_order_is_grouped_by_receiver_slot() -> None:
    graph = ComputationalGraph(n_layers=2, n_heads=3)
    for slot in graph.slots:
        names = graph.edges[slot.edge_start : slot.edge_stop]
        assert all(n.split("->")[1].startswith(slot.node) for n in names), (
            f"slot {slot.node} holds {names}"
        )
        assert [graph.writers[w] for w in slot.writers] == [n.split("->")[0] for n in names]
    assert graph.edge_index("a0.h1->a1.h2<k>") == graph.edges.index("a0.h1->a1.h2<k>")


def test_unknown_names_and_bad_shapes_are_clear_errors() -> None:
    graph = ComputationalGraph(n_layers=1, n_heads=2)
    with pytest.raises(GraphError, match=r"a3\.h0->logits"):
        graph.edge_index("a3.h0->logits")
    with pytest.raises(GraphError, match="n_layers"):
        ComputationalGraph(n_layers=0, n_heads=2)
    with pytest.raises(GraphError, match="ending in"):
        graph.prune_dangling(torch.ones(3, dtype=torch.bool))


def test_prune_dangling_keeps_only_input_to_logits_paths() -> None:
    graph = ComputationalGraph(n_layers=2, n_heads=2, attn_only=True)
    mask = graph.mask_from_edges(
        [
            "input->a0.h0<v>",  # on the path input -> a0.h0 -> a1.h1 -> logits
            "a0.h0->a1.h1<k>",
            "a1.h1->logits",
            "input->a0.h1<q>",  # a0.h1 reaches nothing downstream: dangling
            "a1.h0->logits",  # a1.h0 is never reached from the input: dangling
        ]
    )
    kept = graph.edges_from_mask(graph.prune_dangling(mask))
    assert kept == ["input->a0.h0<v>", "a0.h0->a1.h1<k>", "a1.h1->logits"]
    assert graph.nodes_in(graph.mask_from_edges(kept)) == ["input", "a0.h0", "a1.h1", "logits"]


def test_node_mask_expands_to_outgoing_edges() -> None:
    graph = ComputationalGraph(n_layers=1, n_heads=2, attn_only=True)
    node_mask = torch.zeros(graph.n_nodes, dtype=torch.bool)
    node_mask[graph.node_index("a0.h1")] = True
    edges = graph.edges_from_mask(graph.node_mask_to_edge_mask(node_mask))
    assert edges == ["a0.h1->logits"]
