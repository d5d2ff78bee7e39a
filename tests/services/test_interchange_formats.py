"""The format registry, detection, and round trips of circuitreg, MIB, GraphML and DOT."""

from __future__ import annotations

import pydot
import pytest

from circuitreg.schema import (
    CircuitDocument,
    Component,
    Edge,
    MethodRef,
    ModelRef,
    Provenance,
    TaskRef,
    ValidationResult,
)
from circuitreg.services.interchange import (
    FORMATS,
    Format,
    FormatRegistry,
    ImportOptions,
    InterchangeError,
    UnknownFormatError,
    detect_format,
    export_document,
    read_document,
    write_document,
)


def small_doc(**model: object) -> CircuitDocument:
    """A two-layer circuit with scores, labels, a validation result and a non-circuit part."""
    names = ["input", "a0.h0", "a0.h1", "m0", "a1.h0", "a1.h1", "m1", "logits"]
    edges = [
        ("input->a0.h0<q>", 0.5, True),
        ("input->a0.h1<k>", -0.25, False),
        ("a0.h0->m0", 0.1 + 0.2, True),
        ("a0.h0->a1.h0<k>", 1e-17, True),
        ("a0.h1->a1.h0<v>", 0.125, False),
        ("m0->a1.h1<q>", 1.5, True),
        ("a1.h0->logits", -2.0, True),
        ("a1.h1->m1", 3.25, False),
        ("m1->logits", 0.0625, False),
    ]
    return CircuitDocument(
        model=ModelRef(name="toy-2l", n_layers=2, n_heads=2, d_model=16, **model),  # type: ignore[arg-type]
        task=TaskRef(name="induction", spec={"seq_len": 8}),
        method=MethodRef(name="eap-ig", params={"steps": 5}),
        seed=3,
        components=[Component.from_name(n, in_circuit=n not in ("a0.h1", "m1")) for n in names],
        edges=[Edge.from_name(n, score=s, in_circuit=c) for n, s, c in edges],
        labels={"a1.h0": ("induction head",), "a0.h0": ("previous-token head",)},
        validation=(
            ValidationResult(
                name="faithfulness",
                ablation="mean",
                metric="kl",
                values={"score": 0.9},
                passed=True,
            ),
        ),
        provenance=Provenance(job_id="job-1", extra={"note": "test"}),
    )


def test_registry_refuses_duplicate_names() -> None:
    registry = FormatRegistry()
    fmt = Format("x", "test", ".x", "text/plain", writer=lambda doc: b"")
    registry.register(fmt)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(fmt)


def test_unknown_and_one_way_formats_say_so() -> None:
    with pytest.raises(
        UnknownFormatError, match="unknown format 'yaml'; known formats: circuitreg"
    ):
        FORMATS.get("yaml")
    with pytest.raises(UnknownFormatError, match="exported but not imported"):
        read_document(b"digraph {}", "dot")
    assert set(FORMATS.readable()) == {
        "circuitreg", "mib", "neuronpedia", "auto-circuit", "acdc", "graphml"
    }  # fmt: skip
    assert "dot" in FORMATS.writable()


def test_circuitreg_round_trip_is_equal_and_refuses_contradicting_options() -> None:
    doc = small_doc()
    data = write_document(doc, "circuitreg")
    assert read_document(data, "circuitreg") == doc
    assert read_document(data, "circuitreg", ImportOptions(model="toy-2l")) == doc
    with pytest.raises(InterchangeError, match="the option says 'gpt2'") as caught:
        read_document(data, "circuitreg", ImportOptions(model="gpt2"))
    assert caught.value.location == "$.model.name"


def test_circuitreg_schema_violation_names_the_field() -> None:
    good = write_document(small_doc(), "circuitreg")
    bad = good.replace(b'"n_heads":2', b'"n_heads":0')
    with pytest.raises(InterchangeError, match="greater than or equal to 1") as caught:
        read_document(bad, "circuitreg")
    assert caught.value.location == "$.model.n_heads"
    unknown_node = good.replace(b'"target":"m0"', b'"target":"m1"', 1).replace(
        b'"source":"a0.h0","target":"m1"', b'"source":"a0.h0","target":"m7"'
    )
    with pytest.raises(InterchangeError, match="'m7' not in components") as caught:
        read_document(unknown_node, "circuitreg")
    assert caught.value.location == "$"


def test_mib_small_round_trip_keeps_the_id() -> None:
    doc = small_doc()
    back = read_document(
        write_document(doc, "mib"),
        "mib",
        ImportOptions(model="toy-2l", task="induction", method="eap-ig", seed=3),
    )
    assert back.edges == doc.edges and back.components == doc.components
    assert (back.model.n_layers, back.model.n_heads, back.model.d_model) == (2, 2, 16)


def test_mib_exports_an_import_with_positions_summed_and_says_so() -> None:
    """Edges given at token positions (no position axis) are terms of their edge's sum."""
    doc = small_doc()
    first = doc.edges[0]
    split = (
        first.model_copy(update={"position": 3, "score": 0.375}),
        first.model_copy(update={"position": 5, "score": 0.125, "in_circuit": False}),
    )
    positioned = CircuitDocument.model_validate(
        doc.model_copy(update={"edges": (*split, *doc.edges[1:])}).model_dump()
    )
    exported = export_document(positioned, "mib")
    assert exported.data == write_document(doc, "mib")  # 0.375 + 0.125 = 0.5, in the circuit
    assert exported.notes == (
        "mib has no token positions: 2 edges given at token positions are exported summed "
        "over their positions",
    )
    assert export_document(doc, "mib").notes == ()


def test_graphml_reimport_equals_the_original() -> None:
    doc = small_doc()
    back = read_document(write_document(doc, "graphml"))
    assert back == doc
    assert back.id == doc.id


def test_graphml_keeps_positions_and_parallel_edges() -> None:
    comps = [Component.from_name("input", position=p) for p in (0, 1)] + [
        Component.from_name("a0.h0", position=1),
        Component.from_name("logits", position=1),
    ]
    edges = [
        Edge.from_name("input->a0.h0<q>", score=0.5, position=1),
        Edge.from_name("input->a0.h0<k>", score=0.25, position=1),
        Edge.from_name("input->a0.h0<v>", score=-1.0, position=1),
        Edge.from_name("a0.h0->logits", score=2.0, position=1),
        Edge.from_name("input->logits", score=0.5, position=0),
    ]
    doc = CircuitDocument(
        model=ModelRef(name="m", n_layers=1, n_heads=1),
        task=TaskRef(name="t"),
        method=MethodRef(name="x"),
        components=comps,
        edges=edges,
    )
    assert read_document(write_document(doc, "graphml"), "graphml") == doc


PLAIN_GRAPHML = b"""<?xml version="1.0" encoding="UTF-8"?>
<graphml xmlns="http://graphml.graphdrawing.org/xmlns">
  <key id="s" for="edge" attr.name="score" attr.type="double"/>
  <key id="r" for="edge" attr.name="receiver" attr.type="string"/>
  <graph edgedefault="directed">
    <node id="input"/><node id="a0.h1"/><node id="a1.h0"/><node id="logits"/>
    <edge source="input" target="a0.h1"><data key="s">0.5</data><data key="r">q</data></edge>
    <edge source="a0.h1" target="a1.h0"><data key="s">-1.5</data><data key="r">k</data></edge>
    <edge source="a1.h0" target="logits"><data key="s">2.0</data></edge>
  </graph>
</graphml>"""


def test_plain_graphml_import_by_canonical_names() -> None:
    doc = read_document(PLAIN_GRAPHML, options=ImportOptions(model="m", task="t"))
    assert [e.name for e in doc.edges] == ["input->a0.h1<q>", "a0.h1->a1.h0<k>", "a1.h0->logits"]
    assert [e.score for e in doc.edges] == [0.5, -1.5, 2.0]
    assert (doc.model.n_layers, doc.model.n_heads) == (2, 2)
    assert doc.provenance.extra["inferred_shape"] == ["n_layers", "n_heads"]


def test_plain_graphml_errors_say_where() -> None:
    no_receiver = PLAIN_GRAPHML.replace(b'<data key="r">k</data>', b"")
    with pytest.raises(InterchangeError, match="names no <q>, <k> or <v>") as caught:
        read_document(no_receiver, "graphml")
    assert caught.value.location == "edge 'a0.h1' -> 'a1.h0' (key 0)"
    with pytest.raises(InterchangeError, match="not a canonical component name") as caught:
        read_document(PLAIN_GRAPHML.replace(b'"a1.h0"', b'"L1H0"'), "graphml")
    assert caught.value.location == "node 'L1H0'"
    with pytest.raises(InterchangeError, match="invalid XML") as caught:
        read_document(PLAIN_GRAPHML[:300], "graphml")
    assert caught.value.location is not None and caught.value.location.startswith("line ")


def test_dot_output_is_valid_graphviz_of_the_circuit() -> None:
    doc = small_doc()
    graphs = pydot.graph_from_dot_data(write_document(doc, "dot").decode())
    assert graphs is not None and len(graphs) == 1
    graph = graphs[0]
    assert graph.get_type() == "digraph"
    nodes = {n.get_name().strip('"') for n in graph.get_nodes()} - {"node", "edge", "graph"}
    assert nodes == {c.name for c in doc.circuit_components()}
    drawn = {(e.get_source().strip('"'), e.get_destination().strip('"')) for e in graph.get_edges()}
    assert drawn == {(e.source, e.target) for e in doc.circuit_edges()}
    receivers = sorted(e.get("receiver") or "" for e in graph.get_edges())
    assert receivers == sorted(e.receiver.value if e.receiver else "" for e in doc.circuit_edges())


@pytest.mark.parametrize("fmt", ["circuitreg", "mib", "graphml", "acdc", "auto-circuit"])
def test_each_export_is_detected_as_its_format(fmt: str) -> None:
    assert detect_format(write_document(small_doc(), fmt)) == fmt


def test_detection_refuses_what_it_cannot_place(tmp_path: object) -> None:
    with pytest.raises(UnknownFormatError, match="cannot tell the format of this json"):
        detect_format(b'{"hello": "world"}')
    with pytest.raises(UnknownFormatError, match="unknown content"):
        detect_format(b"\x00\x01 plain bytes")
    with pytest.raises(InterchangeError, match="cannot read the file"):
        detect_format("/nonexistent/circuit.json")


def test_options_that_do_not_apply_are_refused() -> None:
    data = write_document(small_doc(), "mib")
    with pytest.raises(InterchangeError, match="option top_k does not apply to format 'mib'"):
        read_document(data, "mib", ImportOptions(top_k=10))
    with pytest.raises(InterchangeError, match="options aggregate, n_heads do not apply"):
        read_document(data, "mib", ImportOptions(n_heads=3, aggregate=True))
