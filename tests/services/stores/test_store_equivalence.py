"""Every backend answers every query identically, and every Cypher builder is exercised."""

from __future__ import annotations

import inspect
import os
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from circuitreg.schema import CircuitDocument, ComponentKind, Receiver
from circuitreg.services.stores.cypher import queries, recording
from circuitreg.services.stores.types import (
    CircuitFilter,
    GraphStore,
    Motif,
    MotifEdge,
    NodePattern,
)

from .conftest import (
    INDUCTION,
    PREV_TOKEN,
    corpus,
    faithfulness,
    load,
    position_answers,
    positional_corpus,
)


def answers(store: GraphStore, ids: dict[str, str]) -> dict[str, Any]:
    """Every read of the contract on the loaded corpus, as plain data."""
    every = sorted(ids.values())
    plain = [ids[k] for k in ("step0", "step500", "step1000", "acdc")]  # no positions
    motif = Motif(
        nodes={"prev": NodePattern(label=PREV_TOKEN), "ind": NodePattern(label=INDUCTION)},
        edges=(MotifEdge(source="prev", target="ind", receiver=Receiver.K),),
    )
    kinds = Motif(
        nodes={
            "a": NodePattern(kind=ComponentKind.EMBED),
            "b": NodePattern(kind=ComponentKind.ATTN_HEAD, layer=1),
        },
        edges=(MotifEdge(source="a", target="b"),),
        model="toy-2l",
    )
    out: dict[str, Any] = {
        "documents": {k: store.get_circuit(v) for k, v in ids.items()},
        "summaries": store.get_summaries(every),
        "summary": store.get_summary(ids["step0"]),
        "list_all": store.list_circuits(CircuitFilter(), first=100),
        "list_page": store.list_circuits(CircuitFilter(task="induction"), first=2, after=every[1]),
        "labels": store.component_labels("toy-2l"),
        "usage": store.component_usage("toy-2l", "a1.h2"),
        "with_edge": store.circuits_with_edge("toy-2l", "input->a1.h2<v>"),
        "shared": store.shared_subcircuit(every, min_support=2),
        "shared_strong": store.shared_subcircuit(every, 1, min_importance=0.5),
        "shared_plain": store.shared_subcircuit(plain, 2),
        "shared_plain_strong": store.shared_subcircuit(plain, 1, min_importance=0.75),
        "diff": store.diff(ids["step500"], ids["step1000"]),
        "evolution": store.evolution("toy-2l", "induction", "eap-ig"),
        "paths": {k: store.paths(v) for k, v in ids.items()},
        "motif_roles": store.motif_search(motif),
        "motif_kinds": store.motif_search(kinds, limit=3),
        "resolve": store.resolve("induction/canonical"),
        "similar": {k: store.similar_circuits(v, first=3) for k, v in ids.items()},
        "similar_canonical": {k: store.similar_circuits(v, aligned=False) for k, v in ids.items()},
    }
    for name in ("min_faithfulness", "max_faithfulness"):
        out[name] = store.list_circuits(CircuitFilter(**{name: 0.75}), first=100)
    return out


def available_backends() -> list[str]:
    backends = ["sqlite", "falkordb", "neo4j"]
    if os.environ.get("CIRCUITREG_TEST_POSTGRES_URL"):
        backends.append("postgres")
    return backends


def test_store_every_query_equal_across_backends(
    open_backend: Callable[[str], GraphStore], docs: dict[str, CircuitDocument]
) -> None:
    results: dict[str, dict[str, Any]] = {}
    for backend in available_backends():
        store = open_backend(backend)
        ids = load(store, docs)
        store.label_component("toy-2l", "a0.h3", PREV_TOKEN)
        store.add_validation(ids["acdc"], faithfulness(0.75, minutes=10))
        results[backend] = answers(store, ids)
    reference = results["sqlite"]
    assert reference["shared"].edges and reference["motif_roles"] and reference["paths"]
    assert all(reference["similar"].values()) and all(reference["similar_canonical"].values())
    for backend, got in results.items():
        for query, expected in reference.items():
            assert got[query] == expected, f"{backend} differs from sqlite on {query}"


def _builder_functions() -> set[str]:
    """Public functions of ``queries`` annotated to return a Statement."""
    return {
        name
        for name, fn in inspect.getmembers(queries, inspect.isfunction)
        if fn.__module__ == queries.__name__
        and not name.startswith("_")
        and inspect.signature(fn).return_annotation in ("Statement", queries.Statement)
    }


def test_store_every_cypher_builder_is_executed(
    open_backend: Callable[[str], GraphStore],
    docs: dict[str, CircuitDocument],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run the whole contract on FalkorDB, write the corpus on Neo4j (whose transactional
    writes use their own builder), and check no builder in queries.py went unused."""
    from circuitreg.services.stores.cypher import CypherStore

    assert set(queries.BUILDERS) == _builder_functions()
    monkeypatch.setattr(recording, "EXECUTED", Counter())
    store = open_backend("falkordb")  # migrates: the FalkorDB schema builders run here
    assert isinstance(store, CypherStore)
    ids = load(store, docs)
    store.ping()
    store.label_component("toy-2l", "a0.h3", PREV_TOKEN)
    store.add_validation(ids["acdc"], faithfulness(0.75, minutes=10))
    answers(store, ids)
    positional = positional_corpus()
    position_answers(store, {k: store.put_circuit(d) for k, d in positional.items()})
    store.list_circuits(CircuitFilter(alias="induction/canonical"), first=5)
    store.wipe()
    assert store.list_circuits(CircuitFilter(), first=5).items == ()
    neo4j = open_backend("neo4j")
    assert isinstance(neo4j, CypherStore)
    _forget_edge_arrays(neo4j)  # circuits written before the arrays take the FLOWS path
    answers(neo4j, load(neo4j, corpus()))
    missing = set(queries.BUILDERS) - set(recording.EXECUTED)
    assert not missing, f"builders never executed by the contract: {sorted(missing)}"


def _forget_edge_arrays(store: Any) -> None:
    """Make every circuit written from now on look like one from before edge arrays."""
    original = store.put_circuit

    def put_then_forget(doc: CircuitDocument, **kwargs: Any) -> str:
        circuit_id = str(original(doc, **kwargs))
        store.session.run(
            "MATCH (c:Circuit {id: $id}) REMOVE c.edge_keys, c.edge_scores, c.unscored_keys",
            {"id": circuit_id},
        )
        return circuit_id

    store.put_circuit = put_then_forget


@pytest.mark.parametrize("backend", ["falkordb", "neo4j"])
def test_store_circuits_without_edge_arrays_answer_the_same(
    backend: str, open_backend: Callable[[str], GraphStore], docs: dict[str, CircuitDocument]
) -> None:
    """A circuit stored by a version without edge arrays is read from its FLOWS instead."""
    store = open_backend(backend)
    ids = load(store, docs)
    with_arrays = answers(store, ids)
    store.session.run(  # type: ignore[attr-defined]
        "MATCH (c:Circuit) REMOVE c.edge_keys, c.edge_scores, c.unscored_keys"
    )
    assert answers(store, ids) == with_arrays
