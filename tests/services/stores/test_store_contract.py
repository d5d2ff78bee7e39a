"""The GraphStore contract, run on every backend (see conftest ``store``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from circuitreg.schema import CircuitDocument, ComponentKind, Receiver
from circuitreg.services.stores.common import StoreError, UnknownCircuitError, UnknownModelError
from circuitreg.services.stores.types import (
    CircuitFilter,
    GraphStore,
    Motif,
    MotifEdge,
    NodePattern,
)

from .conftest import INDUCTION, PREV_TOKEN, STEP500, faithfulness, load


def _ids(items: Any) -> list[str]:
    return [s.id for s in items]


def test_store_roundtrip_keeps_document(
    store: GraphStore, docs: dict[str, CircuitDocument]
) -> None:
    doc = docs["step500"]
    cid = store.put_circuit(doc, job_id="job-1", dense_scores_uri="file:///scores/x.safetensors")
    got = store.get_circuit(cid)
    assert got is not None
    assert got.id == doc.id == cid
    assert got.labels == {"a0.h1": (PREV_TOKEN,), "a1.h2": (INDUCTION,)}
    assert got.validation == doc.validation
    assert got.provenance == doc.provenance
    assert got.model_dump(exclude={"components", "edges"}) == doc.model_dump(
        exclude={"components", "edges"}
    )
    assert {e.key: e.score for e in got.edges} == {e.key: e.score for e in doc.edges}
    summary = store.get_summary(cid)
    assert summary is not None
    assert (summary.model, summary.checkpoint, summary.step, summary.n_edges) == (
        "toy-2l",
        "step-500",
        500,
        len(STEP500),
    )
    assert summary.faithfulness == 0.875  # the later of the two results
    assert (summary.job_id, summary.dense_scores_uri) == ("job-1", "file:///scores/x.safetensors")
    assert store.get_circuit("c_" + "0" * 32) is None
    assert store.get_summary("c_" + "0" * 32) is None


def test_store_positions_round_trip(store: GraphStore, docs: dict[str, CircuitDocument]) -> None:
    doc = docs["positional"]
    got = store.get_circuit(store.put_circuit(doc))
    assert got is not None and got.id == doc.id
    assert sorted((e.name, e.position) for e in got.edges) == sorted(
        (e.name, e.position) for e in doc.edges
    )


def test_store_double_write_is_idempotent(
    store: GraphStore, docs: dict[str, CircuitDocument]
) -> None:
    doc = docs["step1000"]
    first = store.put_circuit(doc)
    again = store.put_circuit(doc.with_validation(faithfulness(0.25, minutes=60)))
    assert first == again
    page = store.list_circuits(CircuitFilter(), first=10)
    assert _ids(page.items) == [first]
    got = store.get_circuit(first)
    assert got is not None
    assert len(got.edges) == len(doc.edges)
    assert len(got.validation) == 2  # the new result was added, the old one not repeated
    assert store.get_summary(first).faithfulness == 0.25  # type: ignore[union-attr]


def test_store_concurrent_writers_of_one_circuit(
    store: GraphStore, docs: dict[str, CircuitDocument]
) -> None:
    doc = docs["step1000"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: store.put_circuit(doc), range(4)))
    assert set(results) == {doc.id}
    assert _ids(store.list_circuits(CircuitFilter(), first=10).items) == [doc.id]
    got = store.get_circuit(doc.id)
    assert got is not None and len(got.edges) == len(doc.edges)
    assert len(got.validation) == len(doc.validation)


def test_store_interrupted_write_then_retry(
    store: GraphStore,
    docs: dict[str, CircuitDocument],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    doc = docs["step500"]
    _fail_before_commit(store, monkeypatch)
    with pytest.raises(Exception, match=r"interrupted|h4a_no_such_function|Unknown function"):
        store.put_circuit(doc)
    assert store.get_summary(doc.id) is None
    assert store.list_circuits(CircuitFilter(), first=10).items == ()
    assert store.circuits_with_edge("toy-2l", "a0.h1->a1.h2<k>") == []
    monkeypatch.undo()
    assert store.put_circuit(doc) == doc.id
    assert _ids(store.list_circuits(CircuitFilter(), first=10).items) == [doc.id]
    got = store.get_circuit(doc.id)
    assert got is not None and sorted(e.key for e in got.edges) == sorted(e.key for e in doc.edges)
    assert len(got.validation) == len(doc.validation)


def _fail_before_commit(store: GraphStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next circuit write fail after its edges are written, before it commits."""
    from circuitreg.services.stores.cypher import CypherStore
    from circuitreg.services.stores.embedded import writer

    if isinstance(store, CypherStore):
        session = store.session
        original = session.run_many

        def run_many(statements: Any) -> None:
            # a statement that fails inside the engine, just before the commit statement
            failing = ("RETURN h4a_no_such_function(1) AS x", {})
            original([*statements[:-1], failing, statements[-1]])

        monkeypatch.setattr(session, "run_many", run_many)
        return
    original_insert = writer.insert_ignore

    def insert_ignore(conn: Any, table: Any, rows: Any) -> int:
        if table.name == "component_labels":  # written after the circuit's edges
            raise RuntimeError("interrupted")
        return original_insert(conn, table, rows)

    monkeypatch.setattr(writer, "insert_ignore", insert_ignore)


def test_store_filters_and_pagination(store: GraphStore, docs: dict[str, CircuitDocument]) -> None:
    ids = load(store, docs)
    everything = store.list_circuits(CircuitFilter(), first=100)
    assert _ids(everything.items) == sorted(ids.values())
    assert not everything.has_next
    seen: list[str] = []
    after = None
    while True:
        page = store.list_circuits(CircuitFilter(), first=2, after=after)
        seen.extend(_ids(page.items))
        if not page.has_next:
            break
        after = page.end_cursor
    assert seen == sorted(ids.values())

    def ids_for(**kwargs: Any) -> set[str]:
        return set(_ids(store.list_circuits(CircuitFilter(**kwargs), first=100).items))

    assert ids_for(checkpoint="step-1000") == {ids["step1000"], ids["acdc"], ids["positional"]}
    assert ids_for(method="acdc") == {ids["acdc"]}
    assert ids_for(task="induction", model="toy-2l") == set(ids.values())
    assert ids_for(model="other") == set()
    assert ids_for(tag="final") == {ids["step1000"], ids["acdc"]}
    assert ids_for(alias="induction/canonical") == {ids["step1000"]}
    assert ids_for(alias="nope") == set()
    assert ids_for(min_faithfulness=0.8) == {ids["step500"], ids["step1000"]}
    assert ids_for(max_faithfulness=0.6) == {ids["step0"]}
    assert ids_for(min_edges=6) == {ids["step500"], ids["step1000"]}
    assert ids_for(max_edges=4, tag="final") == {ids["acdc"]}
    with pytest.raises(StoreError, match="page size"):
        store.list_circuits(CircuitFilter(), first=0)


def test_store_tags_aliases_and_resolve(
    store: GraphStore, docs: dict[str, CircuitDocument]
) -> None:
    ids = load(store, docs)
    store.tag(ids["step1000"], "final")  # again: no duplicate
    assert store.get_summary(ids["step1000"]).tags == ("final",)  # type: ignore[union-attr]
    assert store.resolve("induction/canonical") == ids["step1000"]
    assert store.resolve(ids["step0"]) == ids["step0"]
    assert store.resolve("missing") is None
    store.set_alias("induction/canonical", ids["step500"])  # moves
    assert store.resolve("induction/canonical") == ids["step500"]
    assert store.get_summary(ids["step1000"]).aliases == ()  # type: ignore[union-attr]
    assert store.get_summaries([ids["step500"], "missing"]).keys() == {ids["step500"]}
    with pytest.raises(UnknownCircuitError, match="c_missing"):
        store.tag("c_missing", "x")
    with pytest.raises(UnknownCircuitError):
        store.set_alias("a", "c_missing")
    with pytest.raises(StoreError, match="tag must not be empty"):
        store.tag(ids["step0"], " ")


def test_store_labels_and_validation(store: GraphStore, docs: dict[str, CircuitDocument]) -> None:
    ids = load(store, docs)
    store.label_component("toy-2l", "a0.h3", PREV_TOKEN)
    store.label_component("toy-2l", "a0.h3", PREV_TOKEN)
    assert store.component_labels("toy-2l") == {
        "a0.h1": (PREV_TOKEN,),
        "a0.h3": (PREV_TOKEN,),
        "a1.h2": (INDUCTION,),
    }
    assert store.component_labels("other") == {}
    got = store.get_circuit(ids["step1000"])
    assert got is not None and got.labels["a0.h3"] == (PREV_TOKEN,)
    store.add_validation(ids["step0"], faithfulness(0.8125, minutes=30))
    store.add_validation(ids["step0"], faithfulness(0.8125, minutes=30))
    got0 = store.get_circuit(ids["step0"])
    assert got0 is not None and len(got0.validation) == 2
    assert store.get_summary(ids["step0"]).faithfulness == 0.8125  # type: ignore[union-attr]
    with pytest.raises(UnknownModelError, match="no model 'other'"):
        store.label_component("other", "a0.h1", INDUCTION)
    with pytest.raises(StoreError, match="not a canonical component name"):
        store.label_component("toy-2l", "head 3", INDUCTION)
    with pytest.raises(UnknownCircuitError):
        store.add_validation("c_missing", faithfulness(0.5))


def test_store_component_and_edge_lookups(
    store: GraphStore, docs: dict[str, CircuitDocument]
) -> None:
    ids = load(store, docs)
    uses = store.component_usage("toy-2l", "a0.h1")
    expected = sorted(
        [ids["step0"], ids["step500"], ids["step1000"], ids["acdc"], ids["positional"]]
    )
    assert [u.circuit.id for u in uses] == expected
    degrees = {u.circuit.id: u.degree for u in uses}
    assert degrees[ids["step0"]] == 1
    assert degrees[ids["step500"]] == 2
    assert degrees[ids["positional"]] == 3  # one input edge and the <k> edge at two positions
    assert [u.circuit.id for u in store.component_usage("toy-2l", "a0.h3")] == [ids["step1000"]]
    with_k = store.circuits_with_edge("toy-2l", "a0.h1->a1.h2<k>")
    assert _ids(with_k) == sorted([ids["step500"], ids["step1000"], ids["acdc"], ids["positional"]])
    assert store.circuits_with_edge("other", "a0.h1->a1.h2<k>") == []
    with pytest.raises(StoreError, match="names no <q>, <k> or <v>"):
        store.circuits_with_edge("toy-2l", "a0.h1->a1.h2")


def test_store_shared_subcircuit(store: GraphStore, docs: dict[str, CircuitDocument]) -> None:
    ids = load(store, docs)
    chosen = [ids["step500"], ids["step1000"], ids["acdc"], ids["positional"]]
    shared = store.shared_subcircuit(chosen, min_support=3)
    by_edge = {e.edge: e for e in shared.edges}
    assert list(by_edge) == [
        "a0.h1->a1.h2<k>",
        "a1.h2->logits",
        "input->a0.h1<v>",
        "input->a1.h2<q>",
    ]
    k_edge = by_edge["a0.h1->a1.h2<k>"]
    assert (k_edge.support, k_edge.source, k_edge.target, k_edge.receiver) == (
        4,
        "a0.h1",
        "a1.h2",
        Receiver.K,
    )
    assert k_edge.scores == {
        ids["step500"]: 1.25,
        ids["step1000"]: 2.0,
        ids["acdc"]: None,
        ids["positional"]: 0.5,  # summed over its two positions
    }
    assert by_edge["input->a1.h2<q>"].support == 3
    assert shared.components == ("input", "a0.h1", "a1.h2", "logits")
    strong = store.shared_subcircuit(chosen, min_support=2, min_importance=1.0)
    assert [(e.edge, e.support) for e in strong.edges] == [
        ("a1.h2->logits", 3),
        ("a0.h1->a1.h2<k>", 2),
        ("input->a0.h1<v>", 2),
    ]
    assert {e.edge: sorted(e.scores.values()) for e in strong.edges} == {
        "a0.h1->a1.h2<k>": [1.25, 2.0],
        "a1.h2->logits": [1.5, 2.5, 3.0],
        "input->a0.h1<v>": [1.0, 1.0],
    }
    # Without positional circuits the store takes its single-row-per-edge path.
    plain = [ids["step500"], ids["step1000"], ids["acdc"]]
    assert {e.edge: e.support for e in store.shared_subcircuit(plain, 2).edges} == {
        "a0.h1->a1.h2<k>": 3,
        "a1.h2->logits": 3,
        "input->a0.h1<v>": 3,
        "input->a1.h2<q>": 3,
        "input->a1.h2<v>": 2,
    }
    plain_strong = store.shared_subcircuit(plain, 2, min_importance=1.0)
    assert [(e.edge, e.scores) for e in plain_strong.edges] == [
        ("a0.h1->a1.h2<k>", {ids["step500"]: 1.25, ids["step1000"]: 2.0}),
        ("a1.h2->logits", {ids["step500"]: 1.5, ids["step1000"]: 2.5}),
    ]
    with pytest.raises(StoreError, match="min_support"):
        store.shared_subcircuit(chosen, min_support=5)
    with pytest.raises(UnknownCircuitError):
        store.shared_subcircuit([ids["step0"], "c_missing"], min_support=1)


def test_store_diff_and_evolution(store: GraphStore, docs: dict[str, CircuitDocument]) -> None:
    ids = load(store, docs)
    diff = store.diff(ids["step0"], ids["step500"])
    assert diff.only_a == ()
    assert diff.only_b == ("a0.h1->a1.h2<k>",)
    assert len(diff.both) == 5
    evo = store.evolution("toy-2l", "induction", "eap-ig")
    assert [(s.checkpoint, s.step) for s in evo.steps] == [
        ("step-0", 0),
        ("step-500", 500),
        ("step-1000", 1000),
    ]
    assert evo.steps[0].disappeared == ()
    assert evo.steps[1].appeared == ("a0.h1->a1.h2<k>",)
    assert evo.steps[2].appeared == ("a0.h3->a1.h2<k>",)
    assert evo.steps[2].disappeared == ("input->logits",)
    assert store.evolution("toy-2l", "induction", "nope").steps == ()
    with pytest.raises(UnknownCircuitError):
        store.diff(ids["step0"], "c_missing")


def test_store_paths(store: GraphStore, docs: dict[str, CircuitDocument]) -> None:
    ids = load(store, docs)
    paths = store.paths(ids["step500"])
    assert paths == [
        ("input", "a0.h1", "a1.h2", "logits"),
        ("input", "a1.h2", "logits"),
        ("input", "logits"),
    ]
    assert store.paths(ids["step500"], max_paths=2) == paths[:2]
    with pytest.raises(StoreError, match="max_paths"):
        store.paths(ids["step500"], max_paths=0)
    with pytest.raises(UnknownCircuitError):
        store.paths("c_missing")


def test_store_motif_search(store: GraphStore, docs: dict[str, CircuitDocument]) -> None:
    ids = load(store, docs)
    store.label_component("toy-2l", "a0.h3", PREV_TOKEN)
    by_role = Motif(
        nodes={"prev": NodePattern(label=PREV_TOKEN), "ind": NodePattern(label=INDUCTION)},
        edges=(MotifEdge(source="prev", target="ind", receiver=Receiver.K),),
        model="toy-2l",
    )
    matches = store.motif_search(by_role)
    assert [m.circuit_id for m in matches] == sorted(
        [ids["step500"], ids["step1000"], ids["acdc"], ids["positional"]]
    )
    final = next(m for m in matches if m.circuit_id == ids["step1000"])
    assert final.bindings == ({"ind": "a1.h2", "prev": "a0.h1"}, {"ind": "a1.h2", "prev": "a0.h3"})
    by_kind = Motif(
        nodes={
            "src": NodePattern(kind=ComponentKind.EMBED),
            "head": NodePattern(kind=ComponentKind.ATTN_HEAD, layer=1),
            "out": NodePattern(name="logits"),
        },
        edges=(
            MotifEdge(source="src", target="head", receiver=Receiver.Q),
            MotifEdge(source="head", target="out"),
        ),
    )
    assert len(store.motif_search(by_kind)) == 4
    assert len(store.motif_search(by_kind, limit=2)) == 2
    wrong_input = Motif(
        nodes={"a": NodePattern(layer=0), "b": NodePattern(layer=1)},
        edges=(MotifEdge(source="a", target="b", receiver=Receiver.Q),),
    )
    assert store.motif_search(wrong_input) == []
    with pytest.raises(StoreError, match="undeclared variable 'z'"):
        store.motif_search(
            Motif(nodes={"a": NodePattern()}, edges=(MotifEdge(source="a", target="z"),))
        )


def test_store_ping_and_migrate_again(store: GraphStore) -> None:
    store.ping()
    store.migrate()  # idempotent
    assert isinstance(store, GraphStore)


def test_store_refuses_a_model_name_with_another_shape(
    store: GraphStore, docs: dict[str, CircuitDocument]
) -> None:
    doc = docs["step500"]
    store.put_circuit(doc)
    before = store.list_circuits(CircuitFilter(), first=100).items
    deeper = doc.model_copy(
        update={"model": doc.model.model_copy(update={"n_layers": doc.model.n_layers + 1})}
    )
    with pytest.raises(StoreError, match=rf"model {doc.model.name!r} is stored with another shape"):
        store.put_circuit(deeper)
    assert store.get_circuit(deeper.id) is None
    assert _ids(store.list_circuits(CircuitFilter(), first=100).items) == _ids(before)
    renamed = deeper.model_copy(
        update={"model": deeper.model.model_copy(update={"name": "its-own-name"})}
    )
    assert store.get_circuit(store.put_circuit(renamed)) is not None
