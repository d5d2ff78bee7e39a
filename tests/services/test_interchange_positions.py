"""Positional circuits in every format (issue 18): circuitreg and GraphML keep them whole,
MIB, ACDC and auto-circuit export the summed circuit and say so, DOT draws the positions."""

from __future__ import annotations

import json
from pathlib import Path

import pydot
import pytest

from circuitreg.schema import CircuitDocument, Component, Edge, MethodRef, ModelRef, TaskRef
from circuitreg.schema.circuit import PositionAxis
from circuitreg.services.interchange import (
    FORMATS,
    ImportOptions,
    export_document,
    export_file,
    merge_dense,
    read_document,
    write_document,
)
from circuitreg.services.interchange.base import dense_key, parse_dense_key
from circuitreg.services.interchange.stored import dense_scores

AXIS = PositionAxis(
    mode="spans",
    labels=("S1", "S2", "END", "other"),
    indices=(1, 3, None, None),
    tokens=("When", " John", " and", " John", " went"),
)
SUMMED = {
    "input->a0.h1<v>": 1.0,
    "a0.h1->a1.h2<k>": 0.75,
    "input->a1.h2<q>": -0.5,
    "a1.h2->logits": 2.0,
}
AT = {
    ("input->a0.h1<v>", 1, "S1"): 0.5,
    ("a0.h1->a1.h2<k>", 3, "S2"): 0.625,
    ("a0.h1->a1.h2<k>", None, "other"): 0.125,
    ("a1.h2->logits", None, "END"): 2.0,
}


def positional_doc() -> CircuitDocument:
    """A spans-mode circuit: summed edges, positional edges, a positional component."""
    edges = [Edge.from_name(n, score=v) for n, v in SUMMED.items()]
    edges += [Edge.from_name(n, score=v, position=p, span=s) for (n, p, s), v in AT.items()]
    edges.append(Edge.from_name("input->a1.h2<k>", score=0.01, in_circuit=False))
    comps = [Component.from_name(n) for n in ("input", "a0.h1", "a1.h2", "logits")]
    comps.append(Component.from_name("a1.h2", span="END", score=1.5))
    comps.append(Component.from_name("a0.h1", position=3, span="S2", score=0.25))
    return CircuitDocument(
        model=ModelRef(name="toy", n_layers=2, n_heads=4, attn_only=True),
        task=TaskRef(name="ioi"),
        method=MethodRef(name="eap", params={"positions": "spans"}),
        seed=1,
        components=tuple(comps),
        edges=tuple(edges),
        positions=AXIS,
    )


@pytest.mark.parametrize("fmt", ["circuitreg", "graphml"])
def test_positional_circuit_round_trips_whole(fmt: str) -> None:
    doc = positional_doc()
    exported = export_document(doc, fmt)
    assert exported.notes == ()
    back = read_document(exported.data, fmt)
    assert back == doc and back.id == doc.id
    assert back.positions == AXIS


def test_graphml_names_positional_nodes_by_position_and_span() -> None:
    import io

    import networkx as nx

    graph = nx.read_graphml(io.BytesIO(write_document(positional_doc(), "graphml")))
    assert {"a1.h2@END", "a0.h1@3@S2", "a1.h2"} <= set(graph.nodes)
    assert json.loads(graph.graph["positions"])["labels"] == ["S1", "S2", "END", "other"]
    # the S2 edge runs from a0.h1's node at S2 (the document has it) to a1.h2 (which it has
    # only unpositioned there)
    ends = {(u, v) for u, v, d in graph.edges(data=True) if d.get("span") == "S2"}
    assert ends == {("a0.h1@3@S2", "a1.h2")}


def test_mib_exports_the_summed_circuit_and_says_what_it_left_out() -> None:
    doc = positional_doc()
    exported = export_document(doc, "mib")
    data = json.loads(exported.data)
    assert data["edges"] == {
        **{n: {"score": v, "in_graph": True} for n, v in SUMMED.items()},
        "input->a1.h2<k>": {"score": 0.01, "in_graph": False},
    }
    assert sorted(data["nodes"]) == ["a0.h1", "a1.h2", "input", "logits"]
    assert exported.notes == (
        "mib has no token positions: the export holds the circuit's 5 summed edges; its 4 "
        "positional edges and 2 positional components are left out (the circuitreg and "
        "graphml formats keep them)",
    )
    back = read_document(exported.data, "mib", ImportOptions(model="toy", task="ioi"))
    assert {e.name: e.score for e in back.edges} == {
        e.name: e.score for e in doc.edges if not e.positional
    }


@pytest.mark.parametrize("fmt", ["acdc", "auto-circuit"])
def test_formats_without_positions_export_the_summed_circuit(fmt: str) -> None:
    doc = positional_doc()
    exported = export_document(doc, fmt)
    assert exported.notes and exported.notes[0].startswith(f"{fmt} has no token positions")
    summed = doc.model_copy(
        update={
            "edges": tuple(e for e in doc.edges if not e.positional),
            "components": tuple(c for c in doc.components if not c.positional),
            "positions": None,
        }
    )
    assert exported.data == write_document(summed, fmt)


def test_dot_draws_positional_nodes() -> None:
    (graph,) = pydot.graph_from_dot_data(write_document(positional_doc(), "dot").decode())
    names = {n.get_name().strip('"') for n in graph.get_nodes()}
    assert {"a1.h2@END", "a0.h1@S2", "a1.h2", "input@S1"} <= names
    input_s1 = next(n for n in graph.get_nodes() if n.get_name().strip('"') == "input@S1")
    assert input_s1.get("style") == "dashed"  # an edge end the circuit has no node for
    ends = {(e.get_source().strip('"'), e.get_destination().strip('"')) for e in graph.get_edges()}
    assert ("a0.h1@S2", "a1.h2@S2") in ends and ("a1.h2@END", "logits@END") in ends


def test_export_file_returns_the_notes(tmp_path: Path) -> None:
    out = tmp_path / "c.json"
    notes = export_file(positional_doc(), "mib", out)
    assert notes == export_document(positional_doc(), "mib").notes and out.exists()


def test_dense_keys_carry_positions_and_spans() -> None:
    doc = positional_doc()
    keys = [dense_key(e) for e in doc.edges]
    assert "a1.h2->logits@@END" in keys and "a0.h1->a1.h2<k>@3@S2" in keys
    assert [parse_dense_key(k) for k in keys] == [(e.name, e.position, e.span) for e in doc.edges]
    # a stored positional circuit gets its out-of-circuit scores back, spans and all
    stored = doc.model_copy(update={"edges": doc.circuit_edges()})
    assert set(merge_dense(stored, dense_scores(doc)).edges) == set(doc.edges)


def test_every_writable_format_states_its_notes() -> None:
    doc = positional_doc()
    for fmt in FORMATS.writable():
        if fmt == "neuronpedia":  # attribution graphs have no head nodes at all
            continue
        notes = export_document(doc, fmt).notes
        assert bool(notes) == (fmt in ("mib", "acdc", "auto-circuit")), fmt
