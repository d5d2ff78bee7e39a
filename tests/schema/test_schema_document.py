"""CircuitDocument validation and the stability of its content-hash id."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from circuitreg.schema import (
    CircuitDocument,
    Component,
    ComponentKind,
    Edge,
    MethodRef,
    ModelRef,
    Provenance,
    TaskRef,
    ValidationResult,
)


def _doc(**changes: object) -> CircuitDocument:
    fields: dict[str, object] = {
        "model": ModelRef(name="gpt2", n_layers=2, n_heads=2),
        "task": TaskRef(name="ioi"),
        "method": MethodRef(name="eap-ig", params={"steps": 5}),
        "seed": 0,
        "components": [Component.from_name(n) for n in ("input", "a0.h1", "m0", "a1.h0", "logits")],
        "edges": [
            Edge.from_name("input->a0.h1<q>", score=0.5),
            Edge.from_name("a0.h1->m0", score=-0.25),
            Edge.from_name("m0->a1.h0<k>", score=1.0),
            Edge.from_name("a1.h0->logits", score=2.0, in_circuit=False),
        ],
        "provenance": Provenance(created_at=datetime(2026, 1, 1, tzinfo=UTC)),
    }
    fields.update(changes)
    return CircuitDocument(**fields)  # type: ignore[arg-type]


def test_id_is_pinned() -> None:
    """A change to the hashed content or its canonical JSON would move every stored id."""
    assert _doc().id == "c_290dfb1d9f4bbba21a19ffa9a1fb8dd9"


def test_id_ignores_order_provenance_labels_and_validation() -> None:
    doc = _doc()
    reordered = _doc(components=doc.components[::-1], edges=doc.edges[::-1])
    assert reordered.id == doc.id
    annotated = doc.with_validation(
        ValidationResult(name="faithfulness", ablation="mean", metric="kl", values={"f": 0.8})
    ).model_copy(update={"labels": {"a0.h1": ("previous-token head",)}})
    assert annotated.id == doc.id
    assert _doc(provenance=Provenance(job_id="other")).id == doc.id


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 1},
        {"method": MethodRef(name="eap-ig", params={"steps": 6})},
        {"task": TaskRef(name="ioi", corruption="abc")},
        {"model": ModelRef(name="gpt2", n_layers=2, n_heads=2, checkpoint="step-10")},
        {"ablation": "zero"},
        {"metric": "kl"},
    ],
)
def test_id_changes_with_content(change: dict[str, object]) -> None:
    assert _doc(**change).id != _doc().id


def test_id_changes_with_a_score_or_flag() -> None:
    doc = _doc()
    flipped = doc.model_copy(
        update={"edges": (doc.edges[0].model_copy(update={"in_circuit": False}), *doc.edges[1:])}
    )
    rescored = doc.model_copy(
        update={"edges": (doc.edges[0].model_copy(update={"score": 0.5000001}), *doc.edges[1:])}
    )
    assert len({doc.id, flipped.id, rescored.id}) == 3


def test_json_round_trip_keeps_id() -> None:
    doc = _doc()
    again = CircuitDocument.from_json(doc.to_json())
    assert again == doc and again.id == doc.id


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"edges": [Edge.from_name("a0.h1->m1")]}, "names component 'm1' not in components"),
        ({"edges": [Edge.from_name("input->a0.h1<q>")] * 2}, "repeated"),
        ({"components": [Component.from_name("input")] * 2, "edges": []}, "repeated"),
        ({"labels": {"m5": ("x",)}}, "label for 'm5', which is not a component"),
        ({"model": ModelRef(name="gpt2", n_layers=1, n_heads=2)}, "layer 1 >= n_layers 1"),
        ({"model": ModelRef(name="gpt2", n_layers=2, n_heads=1)}, "head 1 >= n_heads 1"),
    ],
)
def test_inconsistent_documents_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _doc(**changes)


def test_components_must_agree_with_their_names() -> None:
    with pytest.raises(ValidationError, match="disagree with its name"):
        Component(name="a0.h1", kind=ComponentKind.ATTN_HEAD, layer=0, head=2)
    with pytest.raises(ValidationError, match="not a canonical edge name"):
        Edge(source="a0.h1", target="a1-h0")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Component.model_validate({"name": "m0", "kind": "mlp", "layer": 0, "colour": "red"})


# -- positions (issue 18) ------------------------------------------------------------------

_SPANS = {"mode": "spans", "labels": ["S2", "END", "other"], "indices": [None, 4, None]}


def _positional(**edge: object) -> dict[str, object]:
    data = _doc(positions=_SPANS).model_dump()
    extra = Edge.from_name("m0->a1.h0<k>", score=0.5, position=4, span="END").model_dump()
    data["edges"] = [*data["edges"], extra | edge]
    return data


def test_positional_edges_sit_beside_the_summed_ones() -> None:
    doc = CircuitDocument.model_validate(_positional())
    assert doc.positions is not None and doc.edges[-1].key == ("m0->a1.h0<k>", 4, "END")
    assert doc.edges[-1].positional and not doc.edges[2].positional
    assert CircuitDocument.from_json(doc.to_json()).id == doc.id
    assert doc.id != _doc().id and doc.content()["positions"]["labels"] == _SPANS["labels"]


@pytest.mark.parametrize(
    ("edge", "message"),
    [
        ({"span": "IO"}, "span 'IO' is not one of"),
        ({"position": 3}, "span 'END' is at index 4, not 3"),
        ({"span": None}, "span None is not one of"),
    ],
)
def test_positional_edges_must_name_a_position_of_the_axis(
    edge: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        CircuitDocument.model_validate(_positional(**edge))


def test_a_span_needs_an_axis_and_unpositioned_ids_do_not_move() -> None:
    data = _doc().model_dump()
    data["edges"] = [dict(data["edges"][0], span="END"), *data["edges"][1:]]
    with pytest.raises(ValidationError, match="no position axis"):
        CircuitDocument.model_validate(data)
    assert "positions" not in _doc().content()
    assert all("span" not in e for e in _doc().content()["edges"])
