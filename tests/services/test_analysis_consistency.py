"""Consistency between two circuits: same shape by name, other depths by depth and role."""

from __future__ import annotations

import pytest

from circuitreg.schema import (
    CircuitDocument,
    Component,
    Edge,
    MethodRef,
    ModelRef,
    TaskRef,
    ValidationResult,
    parse_edge,
)
from circuitreg.services.analysis import compare_circuits, diff_edges, performance_of
from circuitreg.services.analysis.orientation import helpful_sign


def make_doc(
    edges: dict[str, float],
    *,
    n_layers: int = 2,
    n_heads: int = 4,
    out_of_circuit: dict[str, float] | None = None,
    labels: dict[str, tuple[str, ...]] | None = None,
    faithfulness: float | None = None,
    name: str = "toy",
    method: str = "eap",
    metric: str = "logit_diff",
) -> CircuitDocument:
    """A circuit whose in-circuit edges are ``edges`` (name -> score)."""
    others = out_of_circuit or {}
    all_edges = [Edge.from_name(n, score=s) for n, s in edges.items()]
    all_edges += [Edge.from_name(n, score=s, in_circuit=False) for n, s in others.items()]
    inside = {p for n in edges for p in (parse_edge(n).source, parse_edge(n).target)}
    every = inside | {p for n in others for p in (parse_edge(n).source, parse_edge(n).target)}
    every |= set(labels or {})
    doc = CircuitDocument(
        model=ModelRef(name=name, n_layers=n_layers, n_heads=n_heads),
        task=TaskRef(name="induction"),
        method=MethodRef(name=method),
        metric=metric,
        components=tuple(Component.from_name(c, in_circuit=c in inside) for c in sorted(every)),
        edges=tuple(all_edges),
        labels=labels or {},
    )
    if faithfulness is not None:
        doc = doc.with_validation(
            ValidationResult(
                name="faithfulness",
                ablation="resample",
                metric="logit_diff",
                values={"faithfulness": faithfulness},
            )
        )
    return doc


INDUCTION = {
    "input->a0.h1<q>": 0.2,
    "a0.h1->a1.h2<k>": 1.5,
    "input->a1.h2<v>": 0.9,
    "a1.h2->logits": 2.0,
}
OTHER = {"input->a0.h3<v>": 0.1, "a0.h3->logits": 0.05, "input->logits": -0.3}


def test_a_circuit_is_fully_consistent_with_itself() -> None:
    doc = make_doc(INDUCTION, out_of_circuit=OTHER, faithfulness=0.93)
    report = compare_circuits(doc, doc)
    assert report.alignment == "canonical"
    assert report.edge_jaccard == 1.0
    assert report.node_jaccard == 1.0
    assert report.weighted_overlap == pytest.approx(1.0)
    assert report.rank_correlation == pytest.approx(1.0)
    assert report.shared_edges == len(INDUCTION)
    assert report.performance_agrees is True


def test_disjoint_circuits_share_nothing() -> None:
    a = make_doc({"input->a0.h0<v>": 1.0, "a0.h0->logits": 1.0})
    b = make_doc({"input->a1.h3<q>": 1.0, "a1.h3->logits": 2.0})
    report = compare_circuits(a, b)
    assert report.edge_jaccard == 0.0
    # input and logits are in every circuit; nothing else is shared
    assert report.node_jaccard == pytest.approx(2 / 4)
    assert report.weighted_overlap == 0.0
    assert report.shared_edges == 0


def test_partial_overlap_and_weighting() -> None:
    a = make_doc({"input->a0.h0<v>": 3.0, "a0.h0->logits": 1.0})
    b = make_doc({"input->a0.h0<v>": 1.0, "input->logits": 1.0})
    report = compare_circuits(a, b)
    assert report.edge_jaccard == pytest.approx(1 / 3)
    # shares: a = {x: .75, y: .25}, b = {x: .5, z: .5}; sum(min)=.5, sum(max)=.75+.25+.5
    assert report.weighted_overlap == pytest.approx(0.5 / 1.5)


def test_rank_correlation_uses_every_scored_edge() -> None:
    names = list(INDUCTION) + list(OTHER)
    a = make_doc(INDUCTION, out_of_circuit=OTHER)
    reversed_scores = {n: -float(i) for i, n in enumerate(names)}
    b = make_doc(
        {n: reversed_scores[n] for n in INDUCTION},
        out_of_circuit={n: reversed_scores[n] for n in OTHER},
    )
    forward = {n: float(i) for i, n in enumerate(names)}
    c = make_doc({n: forward[n] for n in INDUCTION}, out_of_circuit={n: forward[n] for n in OTHER})
    assert compare_circuits(b, c).rank_correlation == pytest.approx(-1.0)
    assert compare_circuits(c, c).rank_correlation == pytest.approx(1.0)
    assert -1.0 <= (compare_circuits(a, b).rank_correlation or 0.0) <= 1.0


def test_performance_agreement_uses_tolerance() -> None:
    a = make_doc(INDUCTION, faithfulness=0.90)
    b = make_doc(INDUCTION, faithfulness=0.80)
    assert compare_circuits(a, b, tolerance=0.05).performance_agrees is False
    assert compare_circuits(a, b, tolerance=0.15).performance_agrees is True
    unknown = compare_circuits(a, make_doc(INDUCTION))
    assert unknown.performance_agrees is None
    assert "unknown" in unknown.note
    assert performance_of(a) == pytest.approx(0.90)


def test_relative_depth_aligns_models_of_different_depth() -> None:
    shallow = make_doc(
        {"input->a0.h1<q>": 1.0, "a0.h1->a1.h2<k>": 1.0, "a1.h2->logits": 1.0}, n_layers=2
    )
    # the same mechanism in a 4-layer model: previous-token head in layer 1 (bucket 0),
    # induction head in layer 3 (bucket 1)
    deep = make_doc(
        {"input->a1.h0<q>": 1.0, "a1.h0->a3.h5<k>": 1.0, "a3.h5->logits": 1.0},
        n_layers=4,
        n_heads=8,
        name="deep",
    )
    report = compare_circuits(shallow, deep)
    assert report.alignment == "relative_depth"
    assert report.edge_jaccard == 1.0
    assert report.node_jaccard == 1.0
    assert "2 depth buckets" in report.note
    # the deep model's mechanism one bucket too late does not align
    late = make_doc(
        {"input->a2.h0<q>": 1.0, "a2.h0->a3.h5<k>": 1.0, "a3.h5->logits": 1.0},
        n_layers=4,
        n_heads=8,
        name="late",
    )
    assert compare_circuits(shallow, late).edge_jaccard == pytest.approx(1 / 5)


def test_role_labels_align_models_of_different_depth() -> None:
    roles_a = {"a0.h1": ("previous-token head",), "a1.h2": ("induction head",)}
    a = make_doc(
        {"input->a0.h1<q>": 1.0, "a0.h1->a1.h2<k>": 2.0, "a1.h2->logits": 1.0},
        labels=roles_a,
    )
    roles_b = {"a2.h0": ("previous-token head",), "a5.h3": ("induction head",)}
    b = make_doc(
        {
            "input->a2.h0<q>": 1.0,
            "a2.h0->a5.h3<k>": 2.0,
            "a5.h3->logits": 1.0,
            "input->a4.h1<v>": 1,
        },
        n_layers=6,
        labels=roles_b,
        name="six-layer",
    )
    report = compare_circuits(a, b)
    assert report.alignment == "roles"
    assert report.shared_edges == 3
    assert report.edge_jaccard == pytest.approx(3 / 3)
    assert "1 unlabelled components of six-layer left out" in report.note
    # the same pair compared by depth instead (explicitly asked) gives another answer
    by_depth = compare_circuits(a, b, alignment="relative_depth")
    assert by_depth.alignment == "relative_depth"
    assert by_depth.edge_jaccard < 1.0


def test_bad_requests_are_named() -> None:
    a = make_doc(INDUCTION)
    deep = make_doc({"input->logits": 1.0}, n_layers=4, name="deep")
    with pytest.raises(ValueError, match="canonical alignment needs the same shape"):
        compare_circuits(a, deep, alignment="canonical")
    with pytest.raises(ValueError, match="roles alignment needs role labels"):
        compare_circuits(a, deep, alignment="roles")
    with pytest.raises(ValueError, match="tolerance"):
        compare_circuits(a, a, tolerance=-1)


def test_edge_diff_under_each_alignment() -> None:
    a = make_doc({"input->a0.h0<v>": 3.0, "a0.h0->logits": 1.0})
    b = make_doc({"input->a0.h0<v>": 1.0, "input->logits": 1.0})
    diff = diff_edges(a, b)
    assert diff.alignment == "canonical"
    assert diff.both == ("input->a0.h0<v>",)
    assert diff.only_a == ("a0.h0->logits",)
    assert diff.only_b == ("input->logits",)
    deep = make_doc({"input->a3.h0<v>": 1.0, "a3.h0->logits": 1.0}, n_layers=4, name="deep")
    by_depth = diff_edges(a, deep)
    assert by_depth.alignment == "relative_depth"
    # a0 of 2 layers is depth bucket 0; a3 of 4 layers is bucket 1: nothing lines up
    assert by_depth.both == ()
    assert by_depth.only_a == ("attn@depth0->logits", "input->attn@depth0<v>")
    assert by_depth.only_b == ("attn@depth1->logits", "input->attn@depth1<v>")
    with pytest.raises(ValueError, match="alignment 'sideways'"):
        diff_edges(a, b, alignment="sideways")  # type: ignore[arg-type]


def test_rank_correlation_orients_each_methods_sign() -> None:
    names = list(INDUCTION) + list(OTHER)
    helps = {n: float(i + 1) for i, n in enumerate(names)}  # larger = carries more behaviour

    def doc(method: str, metric: str, sign: float) -> CircuitDocument:
        return make_doc(
            {n: sign * helps[n] for n in INDUCTION},
            out_of_circuit={n: sign * helps[n] for n in OTHER},
            method=method,
            metric=metric,
        )

    # EAP reports the logit difference's change when an edge is ablated: helpful edges are
    # negative; ACDC reports the removal cost: helpful edges are positive
    eap_doc, acdc_doc = doc("eap", "logit_diff", -1.0), doc("acdc", "logit_diff", 1.0)
    report = compare_circuits(eap_doc, acdc_doc)
    assert report.rank_correlation == pytest.approx(1.0)
    assert "negated" in report.note
    # under KL (lower is better) an ablation that matters raises it: positive helps already
    assert compare_circuits(doc("eap", "kl", 1.0), acdc_doc).rank_correlation == pytest.approx(1.0)
    assert helpful_sign("eap", {"direction": "denoising"}, "logit_diff")[0] == 1.0
    assert helpful_sign("someone_elses_method", {}, "logit_diff")[0] == 1.0


def test_consistency_compares_a_positional_circuit_by_its_summed_edges() -> None:
    """A positional circuit holds its summed edges and positional ones that refine them:
    compared with the same circuit unpositioned, it is the same circuit."""
    from circuitreg.schema.circuit import PositionAxis

    plain = make_doc({"input->a0.h1<v>": 1.0, "a0.h1->a1.h2<k>": 0.5, "a1.h2->logits": 2.0})
    axis = PositionAxis(mode="index", labels=("0", "1", "2"), indices=(0, 1, 2))
    refined = (
        Edge.from_name("a0.h1->a1.h2<k>", score=0.375, position=2),
        Edge.from_name("a1.h2->logits", score=2.0, position=2),
    )
    positional = plain.model_copy(update={"positions": axis, "edges": (*plain.edges, *refined)})
    positional = CircuitDocument.model_validate(positional.model_dump())
    report = compare_circuits(plain, positional)
    assert (report.edge_jaccard, report.shared_edges) == (1.0, 3)
    assert report.weighted_overlap == pytest.approx(1.0)
    assert report.canonical_cosine == pytest.approx(1.0)
    assert report.rank_correlation == pytest.approx(1.0)
    assert diff_edges(plain, positional).only_b == ()
