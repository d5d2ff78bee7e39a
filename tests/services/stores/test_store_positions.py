"""Positions in every store (issue 18): exact round trips, position queries, the indexes
that answer them, and a positional circuit's graph counted once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from circuitreg.schema import CircuitDocument
from circuitreg.services.stores.common import StoreError, UnknownCircuitError
from circuitreg.services.stores.types import GraphStore

from .conftest import corpus, load, position_answers, positional_corpus
from .test_store_equivalence import available_backends


@pytest.fixture
def pdocs() -> dict[str, CircuitDocument]:
    """The positional corpus, fresh per test."""
    return positional_corpus()


def _put(store: GraphStore, docs: dict[str, CircuitDocument]) -> dict[str, str]:
    return {name: store.put_circuit(doc) for name, doc in docs.items()}


def test_store_positional_documents_round_trip_exactly(
    store: GraphStore, pdocs: dict[str, CircuitDocument]
) -> None:
    for name, doc in pdocs.items():
        cid = store.put_circuit(doc)
        got = store.get_circuit(cid)
        assert got == doc, name  # positions, spans, axis, order and scores
        assert got is not None and got.id == doc.id == cid
        assert store.put_circuit(got) == cid  # idempotent: the read-back is the same circuit
    summary = store.get_summary(pdocs["spans"].id)
    assert summary is not None
    # a positional circuit is as large as its summed circuit
    assert (summary.n_edges, summary.n_components) == (4, 4)


def test_store_edges_at_a_span_or_position(
    store: GraphStore, pdocs: dict[str, CircuitDocument]
) -> None:
    ids = _put(store, pdocs)
    at_end = store.edges_at(ids["spans"], span="END")
    assert [(e.name, e.span, e.score) for e in at_end] == [
        ("a1.h2->logits", "END", 1.75),
        ("input->a1.h2<q>", "END", 0.5),
    ]
    head_s2 = store.edges_at(ids["spans"], span="S2", component="a1.h2")
    assert [(e.name, e.position, e.span) for e in head_s2] == [("a0.h1->a1.h2<k>", 4, "S2")]
    assert store.edges_at(ids["spans"], position=4) == head_s2  # S2 is token 4 in every prompt
    assert store.edges_at(ids["spans"], span="IO") == []
    every = store.edges_at(ids["spans"])
    assert len(every) == 5 and all(e.positional for e in every)
    at_7 = store.edges_at(ids["index"], position=7)
    assert [(e.name, e.position, e.span) for e in at_7] == [
        ("a0.h3->a1.h2<k>", 7, None),
        ("a1.h2->logits", 7, None),
    ]
    with pytest.raises(UnknownCircuitError):
        store.edges_at("c_missing", span="END")
    with pytest.raises(StoreError, match="position must be >= 0"):
        store.edges_at(ids["index"], position=-1)
    with pytest.raises(StoreError, match="not a canonical component name"):
        store.edges_at(ids["index"], position=1, component="head 2")


def test_store_where_a_head_or_edge_is_at_a_position(
    store: GraphStore, pdocs: dict[str, CircuitDocument], docs: dict[str, CircuitDocument]
) -> None:
    ids = _put(store, pdocs) | load(store, docs)
    s2 = store.component_usage("toy-2l", "a1.h2", span="S2")
    assert [(u.circuit.id, u.degree) for u in s2] == [(ids["spans"], 1)]
    # END: two edges touch a1.h2 there, and it is a positional component there too
    end = store.component_usage("toy-2l", "a1.h2", span="END")
    assert [(u.circuit.id, u.degree) for u in end] == [(ids["spans"], 2)]
    # a0.h1 at token 4: the spans circuit (S2 is token 4) and the corpus' import at 4
    four = store.component_usage("toy-2l", "a0.h1", position=4)
    assert sorted((u.circuit.id, u.degree) for u in four) == sorted(
        [(ids["spans"], 1), (ids["positional"], 1)]
    )
    seven = store.component_usage("toy-2l", "a1.h2", position=7)
    assert [(u.circuit.id, u.degree) for u in seven] == [(ids["index"], 2)]
    assert store.component_usage("toy-2l", "a1.h2", span="S2", position=5) == []
    assert store.component_usage("other", "a1.h2", span="S2") == []
    # unpositioned, the question is unchanged: every circuit holding a1.h2
    assert {u.circuit.id for u in store.component_usage("toy-2l", "a1.h2")} == set(ids.values())
    edge = "a0.h1->a1.h2<k>"
    assert [s.id for s in store.circuits_with_edge("toy-2l", edge, span="S2")] == [ids["spans"]]
    at_3 = store.circuits_with_edge("toy-2l", edge, position=3)
    assert [s.id for s in at_3] == [ids["positional"]]  # the import's positioned edge
    assert store.circuits_with_edge("toy-2l", edge, span="END") == []
    with pytest.raises(StoreError, match="span must not be empty"):
        store.component_usage("toy-2l", "a1.h2", span="")


def test_store_positional_graph_counts_each_edge_once(
    store: GraphStore, pdocs: dict[str, CircuitDocument]
) -> None:
    """Shared subcircuits, diffs, paths and embeddings read the summed edges only."""
    ids = _put(store, pdocs)
    spans = pdocs["spans"]
    shared = store.shared_subcircuit([ids["spans"]], 1)
    summed = {e.name: e.score for e in spans.edges if not e.positional}
    assert {e.edge: e.scores[ids["spans"]] for e in shared.edges} == summed
    diff = store.diff(ids["spans"], ids["index"])
    assert diff.both == ("a1.h2->logits",)
    assert store.paths(ids["spans"]) == [
        ("input", "a0.h1", "a1.h2", "logits"),
        ("input", "a1.h2", "logits"),
    ]
    plain = spans.model_copy(
        update={
            "edges": tuple(e for e in spans.edges if not e.positional),
            "components": tuple(c for c in spans.components if not c.positional),
            "positions": None,
            "method": spans.method.model_copy(update={"name": "eap"}),
        }
    )
    store.put_circuit(plain)
    # the same summed circuit without positions embeds identically
    similar = store.similar_circuits(ids["spans"], first=1, aligned=False)
    assert [(s.circuit.id, s.similarity) for s in similar] == [(plain.id, pytest.approx(1.0))]


def test_store_position_answers_equal_across_backends(
    open_backend: Callable[[str], GraphStore], pdocs: dict[str, CircuitDocument]
) -> None:
    results: dict[str, dict[str, Any]] = {}
    for backend in available_backends():
        store = open_backend(backend)
        ids = _put(store, pdocs)
        load(store, corpus())
        results[backend] = position_answers(store, ids)
    reference = results["sqlite"]
    assert reference["at_end"] and reference["usage_s2"] and reference["edge_at_s2"]
    for backend, got in results.items():
        for query, expected in reference.items():
            assert got[query] == expected, f"{backend} differs from sqlite on {query}"


def test_store_rejects_a_span_longer_than_its_columns(
    store: GraphStore, pdocs: dict[str, CircuitDocument]
) -> None:
    from circuitreg.schema.circuit import PositionAxis

    from .conftest import positional_circuit

    long = "S" * 201
    axis = PositionAxis(mode="spans", labels=(long, "other"), indices=(None, None))
    doc = positional_circuit(axis, {"a1.h2->logits": 1.0}, {("a1.h2->logits", None, long): 1.0})
    with pytest.raises(StoreError, match="span of 201 characters"):
        store.put_circuit(doc)
    assert store.get_summary(doc.id) is None


POSITION_STATEMENTS = (
    "component_position_degrees",
    "component_position_members",
    "circuits_with_edge_at",
    "position_flows",
)


def _position_statements(ids: dict[str, str]) -> list[Any]:
    from circuitreg.services.stores.cypher import queries as q

    return [
        q.component_position_degrees("toy-2l", "a1.h2", None, "S2"),
        q.component_position_members("toy-2l", "a1.h2", 7, None),
        q.circuits_with_edge_at("toy-2l", "a0.h1", "a0.h1->a1.h2<k>", None, "S2"),
        q.position_flows(ids["spans"], None, "END", None),
    ]


def _neo4j_operators(plan: dict[str, Any]) -> list[str]:
    ops = [str(plan["operatorType"]).split("@")[0]]
    for child in plan.get("children", []):
        ops.extend(_neo4j_operators(child))
    return ops


@pytest.mark.parametrize("backend", ["falkordb", "neo4j"])
def test_store_cypher_position_queries_seek_their_indexes(
    backend: str, open_backend: Callable[[str], GraphStore], pdocs: dict[str, CircuitDocument]
) -> None:
    """Each position query starts from an index (V0005), never from a scan of a label."""
    store: Any = open_backend(backend)
    ids = _put(store, pdocs)
    if backend == "neo4j":
        _fill_neo4j(store)
    statements = _position_statements(ids)
    assert [s.name for s in statements] == list(POSITION_STATEMENTS)
    for stmt in statements:
        if backend == "falkordb":
            plan = str(store.session.graph.explain(stmt.text, stmt.params))
            assert "Index Scan" in plan and "Label Scan" not in plan, (stmt.name, plan)
            continue
        _, summary, _ = store.session.driver.execute_query(
            "EXPLAIN " + stmt.text, stmt.params, database_=store.session.database
        )
        ops = _neo4j_operators(summary.plan)
        assert any("IndexSeek" in op for op in ops), (stmt.name, ops)
        assert not any(op in ("AllNodesScan", "NodeByLabelScan") for op in ops), (stmt.name, ops)
        assert INDEX_OF[stmt.name] in str(summary.plan), (stmt.name, summary.plan)


INDEX_OF = {  # the V0005 index each position query seeks first (Neo4j's plan details)
    "component_position_degrees": "x:Component(model, name, span)",
    "component_position_members": "x:Component(model, name, position)",
    "circuits_with_edge_at": "x:Component(model, name, span)",
    "position_flows": "r:FLOWS_AT(circuit)",
}


def _fill_neo4j(store: Any) -> None:
    """Other models' positional nodes and edges, so that Neo4j plans as a registry's size
    makes it (on a handful of nodes an index scan costs less than a seek)."""
    store.session.run(
        "UNWIND range(0, 3999) AS i "
        "CREATE (a:Component {key: 'fill|' + i, model: 'fill-' + (i % 7), name: 'a0.h' + (i % 40), "
        "position: i % 16, span: 'S' + (i % 5)}) "
        "CREATE (a)-[:FLOWS_AT {circuit: 'c_fill' + (i % 100), key: 'k' + i, edge: 'x', "
        "span: 'S' + (i % 5), position: i % 16}]->(a)"
    )
    store.session.run("CALL db.resampleOutdatedIndexes()")
    store.session.run("CALL db.clearQueryCaches()")


def test_store_embedded_position_queries_use_their_indexes(
    open_backend: Callable[[str], GraphStore], pdocs: dict[str, CircuitDocument]
) -> None:
    """SQLite's plan for every positional read is an index or primary-key search."""
    from sqlalchemy import event

    store: Any = open_backend("sqlite")
    ids = _put(store, pdocs)
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "circuit_position_" in statement and not statement.startswith("EXPLAIN"):
            seen.append((statement, params))

    event.listen(store.engine, "before_cursor_execute", capture)
    store.component_usage("toy-2l", "a1.h2", span="S2")
    store.circuits_with_edge("toy-2l", "a0.h3->a1.h2<k>", position=6)
    store.edges_at(ids["spans"], span="END")
    event.remove(store.engine, "before_cursor_execute", capture)
    assert len(seen) == 5  # two edge ends and the components; the edge; the circuit's edges
    with store.engine.connect() as conn:
        for statement, params in seen:
            plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all()
            details = [str(row[-1]) for row in plan if "circuit_position_" in str(row[-1])]
            assert details and all(" USING " in d for d in details), (statement, details)
            assert not any(d.startswith("SCAN") for d in details), (statement, details)
