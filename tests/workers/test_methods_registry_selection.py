"""Method registry, configs, selection and the interchange document."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

from circuitreg.schema.circuit import CircuitDocument, ModelRef
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.base import ConfigError, MethodConfig, ScoreResult, to_document
from circuitreg.workers.methods.eap import EAPConfig, eap
from circuitreg.workers.methods.eap_ig import EAPIGConfig
from circuitreg.workers.methods.registry import MethodRegistry, RegistryError, default_registry
from circuitreg.workers.methods.selection import (
    Selection,
    SelectionError,
    explain_selection,
    select_edges,
)
from circuitreg.workers.tasks.induction import induction_task


def test_registry_lists_builtin_methods_with_options() -> None:
    registry = default_registry()
    assert {"eap", "eap_ig", "acdc"} <= set(registry.names())
    described = {m["name"]: m for m in registry.describe()}
    options = {o["name"]: o for o in described["eap_ig"]["options"]}
    assert options["steps"]["default"] == 5 and options["steps"]["type"] == "int"
    assert {"ablation", "metric", "batch_size", "variant"} <= set(options)


def test_registry_refuses_duplicates_and_unknown_names() -> None:
    registry = MethodRegistry()
    registry.register("eap", eap, EAPConfig, "x")
    with pytest.raises(RegistryError, match="already registered"):
        registry.register("eap", eap, EAPConfig, "again")
    with pytest.raises(RegistryError, match="method_name"):
        registry.register("other", eap, EAPConfig, "mismatched config")
    with pytest.raises(RegistryError, match="known methods: eap"):
        registry.get("nope")


def test_configs_round_trip_and_reject_bad_values() -> None:
    config = EAPIGConfig.from_dict({"steps": "7", "variant": "activations", "metric": "kl"})
    data = config.to_dict()
    assert data["method"] == "eap_ig" and data["steps"] == 7
    assert default_registry().config_from_dict(data) == config
    with pytest.raises(ConfigError, match="unknown parameter"):
        EAPIGConfig.from_dict({"stepz": "3"})
    with pytest.raises(ConfigError, match="steps='many': Input should be a valid integer"):
        EAPIGConfig.from_dict({"steps": "many"})
    with pytest.raises(ConfigError, match="variant"):
        EAPIGConfig.from_dict({"variant": "outputs"})
    with pytest.raises(ConfigError, match="not 'eap'"):
        EAPConfig.from_dict({"method": "acdc"})


def test_callable_metric_is_recorded_by_name() -> None:
    def my_metric(logits: torch.Tensor, task: Any, clean: torch.Tensor) -> torch.Tensor:
        return logits[..., 0].mean(-1)

    assert EAPConfig(metric=my_metric).to_dict()["metric"] == "callable:my_metric"


def test_subclass_config_needs_its_own_name() -> None:
    class Custom(MethodConfig):
        method_name: ClassVar[str] = "custom"
        width: float = 1.0

    assert Custom.from_dict({"width": "2.5"}).width == 2.5


def _graph() -> ComputationalGraph:
    return ComputationalGraph(n_layers=2, n_heads=2)


def test_top_k_threshold_and_greedy_selection() -> None:
    graph = _graph()
    scores = torch.zeros(graph.n_edges)
    path = ["input->a0.h0<v>", "a0.h0->m1", "m1->logits"]
    for i, name in enumerate(path):
        scores[graph.edge_index(name)] = -(3.0 + i)  # sign ignored when ranking
    scores[graph.edge_index("a1.h1->m1")] = 10.0  # a1.h1 is never reached from the input
    top = explain_selection(scores, graph, Selection("top_k", 4))
    assert graph.edges_from_mask(top.mask) == path  # the dangling edge was pruned
    assert top.note == (
        "top_k 4: 3 edges kept; only 4 edges have a non-zero score, of which 3 lie on an "
        "input->logits path"
    )
    unpruned = select_edges(scores, graph, Selection("top_k", 4, prune_dangling=False))
    assert int(unpruned.sum()) == 4
    assert graph.edges_from_mask(select_edges(scores, graph, Selection("threshold", 3.5))) == []
    # Greedy grows from the logits: m1->logits, a1.h1->m1 (best into m1), a0.h0->m1, then
    # input->a0.h0<v>; a1.h1 is never fed from the input, so its edge is pruned at the end.
    greedy = select_edges(scores, graph, Selection("greedy", 4, prune_dangling=False))
    assert set(graph.edges_from_mask(greedy)) == {*path, "a1.h1->m1"}
    assert graph.edges_from_mask(select_edges(scores, graph, Selection("greedy", 4))) == path
    assert explain_selection(scores, graph, Selection("greedy", 4)).note == (
        "greedy 4: 3 edges kept; 1 grown edges lie on no input->logits path"
    )
    with pytest.raises(SelectionError, match="whole number"):
        Selection("top_k", 2.5)
    with pytest.raises(SelectionError, match="mode"):
        Selection("best", 3)  # type: ignore[arg-type]


def test_top_k_walks_down_the_ranking_until_k_connected_edges_are_kept() -> None:
    """The 3rd-ranked edge dangles; top_k 3 keeps the next one instead of returning 2."""
    graph = _graph()
    scores = torch.zeros(graph.n_edges)
    ranked = ["m1->logits", "a0.h0->m1", "a1.h1->m1", "input->a0.h0<v>", "input->m1"]
    for i, name in enumerate(ranked):
        scores[graph.edge_index(name)] = 10.0 - i
    top = explain_selection(scores, graph, Selection("top_k", 3))
    assert graph.edges_from_mask(top.mask) == ["input->a0.h0<v>", "a0.h0->m1", "m1->logits"]
    assert top.note is None
    # Two edges both connect only with a third: asking for 1 keeps the path of 2 and says so.
    two = explain_selection(scores, graph, Selection("top_k", 1))
    assert int(two.mask.sum()) == 3 and two.note is not None and "connects 3 at once" in two.note
    # One edge completing two paths overshoots K; a redundant lower-ranked edge is dropped.
    fork = torch.zeros(graph.n_edges)
    for i, name in enumerate(["m1->logits", "a0.h0->m1", "a0.h0->logits", "input->a0.h0<v>"]):
        fork[graph.edge_index(name)] = 10.0 - i
    trimmed = explain_selection(fork, graph, Selection("top_k", 3))
    assert trimmed.note is None
    assert graph.edges_from_mask(trimmed.mask) == ["input->a0.h0<v>", "a0.h0->m1", "m1->logits"]
    # Ties at the boundary are broken by edge order, and said to be.
    tied = torch.zeros(graph.n_edges)
    tied[graph.edge_index("input->logits")] = 2.0
    tied[graph.edge_index("input->m0")] = 1.0
    tied[graph.edge_index("input->m1")] = 1.0
    chosen = explain_selection(tied, graph, Selection("top_k", 1, prune_dangling=False))
    assert chosen.note is None and graph.edges_from_mask(chosen.mask) == ["input->logits"]
    tie_note = explain_selection(tied, graph, Selection("top_k", 2, prune_dangling=False)).note
    assert tie_note == "top_k 2: ties at |score| = 1 broken by edge order"


def test_to_document_records_scores_flags_and_provenance() -> None:
    graph = _graph()
    task = induction_task(4, 3, 30)
    scores = torch.linspace(-1, 1, graph.n_edges)
    result = ScoreResult(scores, "eap", EAPConfig().to_dict(), 2, 1, 0.5)
    model_ref = ModelRef(name="toy", n_layers=2, n_heads=2)
    doc = to_document(result, graph, Selection("top_k", 10), model_ref, task, seed=3)
    assert len(doc.edges) == graph.n_edges and len(doc.components) == graph.n_nodes
    assert 0 < len(doc.circuit_edges()) <= 10
    assert doc.task.corruption == task.corruption and doc.task.dataset_hash == task.dataset_hash
    assert doc.provenance.torch_version == torch.__version__
    assert doc.provenance.transformer_lens_version is not None
    assert doc.ablation == "resample" and doc.metric == "logit_diff"
    by_name = {e.name: e for e in doc.edges}
    assert by_name[graph.edges[-1]].score == pytest.approx(1.0)
    in_circuit = {c.name for c in doc.circuit_components()}
    assert in_circuit == set(
        graph.nodes_in(graph.mask_from_edges(e.name for e in doc.circuit_edges()))
    )
    assert CircuitDocument.from_json(doc.to_json()).id == doc.id
    with pytest.raises(ConfigError, match="graph"):
        to_document(result, graph, Selection(), ModelRef(name="x", n_layers=3, n_heads=2), task)
