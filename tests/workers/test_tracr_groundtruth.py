"""tracr fixtures: the bridge reproduces RASP, and the weight-derived edges are the truth."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from circuitreg.schema.circuit import Edge
from circuitreg.schema.names import node_order_key, parse_node
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.models import ModelLoadError, load_model
from circuitreg.workers.tracr import (
    available_fixtures,
    build_bridge,
    ground_truth_edges,
    ground_truth_nodes,
    load_fixture,
)
from circuitreg.workers.tracr.compile import check_fixture
from circuitreg.workers.tracr.fixture import TracrFixtureError

PROGRAMS = ("reverse", "frac_prevs", "pair_balance")


def test_committed_fixtures_are_present() -> None:
    assert set(PROGRAMS) <= set(available_fixtures())


@pytest.mark.parametrize("name", PROGRAMS)
def test_bridge_reproduces_the_rasp_evaluation(name: str) -> None:
    fixture = load_fixture(name)
    assert len(fixture.samples) >= 100
    assert check_fixture(fixture) == []


@pytest.mark.parametrize("name", PROGRAMS)
def test_ground_truth_edges_are_canonical_and_in_the_graph(name: str) -> None:
    fixture = load_fixture(name)
    edges = ground_truth_edges(fixture)
    assert edges and len(set(edges)) == len(edges)
    assert edges == ground_truth_edges(fixture), "deterministic"
    graph = ComputationalGraph.from_model(build_bridge(fixture))
    assert set(edges) <= set(graph.edges)
    for name_ in edges:
        edge = Edge.from_name(name_)
        assert node_order_key(edge.source) < node_order_key(edge.target)
    nodes = ground_truth_nodes(fixture)
    assert nodes[0] == "input" and nodes[-1] == "logits"


def test_frac_prevs_truth_follows_the_program_structure() -> None:
    # frac_prevs = Aggregate(Select(indices, indices, LEQ), numerical Map(tokens == "x")):
    # the Map is an MLP reading tokens; one head averages it (value) with a position-only
    # selector (query, key); layer 0's head and layer 1's MLP are empty.
    edges = set(ground_truth_edges(load_fixture("frac_prevs")))
    assert {"input->m0", "m0->a1.h0<v>", "a1.h0->logits"} <= edges
    assert not any(e.startswith("a0.h0") or e.endswith("a0.h0<q>") for e in edges)
    assert not any("m1" in e for e in edges)
    assert "input->a1.h0<v>" not in edges, "the head averages the Map's output, not tokens"


def _zero_node_hook(node: str) -> tuple[str, object]:
    parsed = parse_node(node)
    if parsed.head is not None:

        def zero_head(z: torch.Tensor, hook: object) -> torch.Tensor:
            z = z.clone()
            z[:, :, parsed.head] = 0.0
            return z

        return f"blocks.{parsed.layer}.attn.hook_z", zero_head
    return f"blocks.{parsed.layer}.hook_mlp_out", lambda out, hook: torch.zeros_like(out)


@pytest.mark.parametrize("name", PROGRAMS)
def test_only_ground_truth_components_matter(name: str) -> None:
    """Knocking out a component outside the truth changes no output; inside, it does."""
    fixture = load_fixture(name)
    bridge = build_bridge(fixture)
    # Short, middle and full lengths: some components only matter for some lengths (reverse's
    # length head does nothing visible on full-length inputs).
    longest = fixture.max_seq_len
    lengths = {2, longest // 2 + 1, longest}
    by_length: dict[int, list[torch.Tensor]] = {}
    for sample in fixture.samples:
        if len(sample.inputs) in lengths:
            by_length.setdefault(len(sample.inputs), []).append(fixture.encode(sample.inputs))
    batches = [torch.stack(rows) for rows in by_length.values()]
    with torch.no_grad():
        clean = [bridge(tokens) for tokens in batches]
    true_nodes = set(ground_truth_nodes(fixture))
    n_layers, n_heads = fixture.bridge_config["n_layers"], fixture.bridge_config["n_heads"]
    components = [f"a{layer}.h{h}" for layer in range(n_layers) for h in range(n_heads)]
    components += [f"m{layer}" for layer in range(n_layers)]
    for node in components:
        hook = _zero_node_hook(node)
        changed = False
        for tokens, logits in zip(batches, clean, strict=True):
            with torch.no_grad():
                knocked = bridge.run_with_hooks(tokens, fwd_hooks=[hook])
            changed |= float((knocked - logits).abs().max()) > 1e-4
        assert changed == (node in true_nodes), f"{name}: knocking out {node}"


def test_tracr_model_spec_carries_the_fixture() -> None:
    loaded = load_model("tracr:reverse", "cpu")
    assert loaded.source == "tracr" and loaded.ref.architecture == "tracr"
    assert loaded.info["fixture"].name == "reverse"
    assert loaded.info["bos_token"] == loaded.info["fixture"].bos_id
    assert loaded.ref.n_layers == 4 and not loaded.ref.attn_only


def test_user_program_file_errors_are_clear(tmp_path: Path) -> None:
    program = tmp_path / "prog.py"
    program.write_text("def something_else():\n    return None\n")
    with pytest.raises(ModelLoadError, match="defines no function 'make_program'"):
        load_model(f"tracr:{program}:make_program", "cpu")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(f"tracr:{tmp_path / 'missing.py'}:make_program", "cpu")


def test_reads_that_never_change_the_output_are_not_true_edges() -> None:
    """reverse's length head (a0.h0, ``Select(tokens, tokens, TRUE)``) reads its query and key
    from the input (non-zero QK weights) but scores every key alike: knocking either out, with
    TransformerLens hooks on the bridge (layer 0 reads only the input, so that is the edge),
    changes no logit on any reference input, while its value edge does. The truth follows."""
    fixture = load_fixture("reverse")
    bridge = build_bridge(fixture)
    w_qk = (bridge.W_Q[0, 0] @ bridge.W_K[0, 0].T).detach()
    assert float(w_qk.abs().max()) > 1.0, "the weights do read the input"
    lengths = sorted({len(s.inputs) for s in fixture.samples})
    assert len(lengths) > 1
    changes: dict[str, float] = {"hook_q": 0.0, "hook_k": 0.0, "hook_v": 0.0}
    for length in lengths:
        tokens = torch.stack([fixture.encode(s.inputs) for s in fixture.samples
                              if len(s.inputs) == length])  # fmt: skip
        with torch.no_grad():
            clean = bridge(tokens)
            for name in changes:
                bias = getattr(bridge.blocks[0].attn, f"b_{name[-1].upper()}")

                def knock_out(
                    x: torch.Tensor, hook: object, bias: torch.Tensor = bias
                ) -> torch.Tensor:
                    return torch.zeros_like(x) + bias.reshape(x.shape[-2:])

                out = bridge.run_with_hooks(
                    tokens, fwd_hooks=[(f"blocks.0.attn.{name}", knock_out)]
                )
                changes[name] = max(changes[name], float((out - clean).abs().max()))
    assert changes["hook_q"] < 1e-4 and changes["hook_k"] < 1e-4, changes
    assert changes["hook_v"] > 0.5, changes
    edges = set(ground_truth_edges(fixture))
    assert "input->a0.h0<v>" in edges and "a0.h0->m0" in edges
    assert not {"input->a0.h0<q>", "input->a0.h0<k>"} & edges


def test_truth_for_one_input_length_drops_what_only_other_lengths_use() -> None:
    fixture = load_model("tracr:reverse", "cpu").info["fixture"]
    everywhere = set(ground_truth_edges(fixture))
    full_length = set(ground_truth_edges(fixture, fixture.max_seq_len))
    # reverse's length (read through a0.h0's value into m0) is the same in every full-length
    # input, so on those inputs no knock-out of it changes the output
    assert everywhere - full_length == {"input->a0.h0<v>", "a0.h0->m0"}
    assert set(ground_truth_edges(fixture, 4)) == everywhere
    with pytest.raises(TracrFixtureError, match="no reference inputs of length 9"):
        ground_truth_edges(fixture, 9)  # not an empty truth
