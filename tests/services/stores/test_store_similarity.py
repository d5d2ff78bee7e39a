"""``similar_circuits`` on every backend: exact cosines best first, embeddings that follow new
role labels, the vector index's candidates, and the migrations that backfill older circuits.

The embedded stores scan their hashed vectors exactly, Neo4j and FalkorDB ask their vector
indexes; the equivalence suite checks all four give the same answers on the shared corpus.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from circuitreg.migrations.relational import downgrade
from circuitreg.schema import CircuitDocument
from circuitreg.services.stores import embedding
from circuitreg.services.stores.common import StoreError, UnknownCircuitError
from circuitreg.services.stores.embedding import document_embedding, rank
from circuitreg.services.stores.types import GraphStore

from .conftest import INDUCTION, PREV_TOKEN, circuit, load, toy_model

# The induction mechanism on seed 0's heads (a0.h1 -> a1.h2) and on another seed's model,
# where the same roles sit on a0.h3 and a1.h0.
SEED0 = {
    "input->a0.h1<v>": 1.0,
    "a0.h1->a1.h2<k>": 2.0,
    "input->a1.h2<q>": 0.5,
    "a1.h2->logits": 3.0,
}
SEED1 = {
    "input->a0.h3<v>": 1.0,
    "a0.h3->a1.h0<k>": 2.0,
    "input->a1.h0<q>": 0.5,
    "a1.h0->logits": 3.0,
}
# Part of seed 0's mechanism, on seed 0's model: similar, but less than seed 1's once its
# heads are labelled.
PART = {"input->a0.h1<v>": 1.0, "a1.h2->logits": 3.0, "input->m0": 0.25}
ROLES0 = {"a0.h1": (PREV_TOKEN,), "a1.h2": (INDUCTION,)}
ROLES1 = {"a0.h3": (PREV_TOKEN,), "a1.h0": (INDUCTION,)}


SEED1_MODEL = toy_model().model_copy(update={"name": "toy-2l-seed1"})


def _expected(
    store: GraphStore, ids: dict[str, str], name: str, aligned: bool, first: int = 10
) -> list[tuple[str, float]]:
    """The answer from the stored documents alone (their edges and their models' labels)."""
    docs = {cid: store.get_circuit(cid) for cid in ids.values()}
    vectors = {cid: document_embedding(doc, aligned=aligned) for cid, doc in docs.items() if doc}
    return rank(vectors[ids[name]], vectors, first, exclude=ids[name])


@pytest.mark.parametrize("aligned", [True, False])
def test_store_similar_circuits_are_exact_cosines_best_first(
    store: GraphStore, docs: dict[str, CircuitDocument], aligned: bool
) -> None:
    ids = load(store, docs)
    store.label_component("toy-2l", "a0.h3", PREV_TOKEN)
    for name, cid in ids.items():
        got = store.similar_circuits(cid, first=10, aligned=aligned)
        assert [(s.circuit.id, s.similarity) for s in got] == _expected(store, ids, name, aligned)
        assert cid not in {s.circuit.id for s in got}
        assert got == sorted(got, key=lambda s: (-s.similarity, s.circuit.id))
        assert got[0].circuit == store.get_summary(got[0].circuit.id)
    assert len(store.similar_circuits(ids["step1000"], first=2)) == 2


@pytest.mark.parametrize("how", ["label_component", "document_labels"])
def test_store_role_embeddings_follow_new_labels(
    store: GraphStore, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """With the index asked for one candidate, only an up-to-date role-aligned vector of the
    other seed's circuit can win: labelling its heads must re-align the stored vector."""
    monkeypatch.setattr(embedding, "MIN_CANDIDATES", 1)
    monkeypatch.setattr(embedding, "CANDIDATE_FACTOR", 1)
    query = store.put_circuit(circuit(SEED0, labels=ROLES0))
    part = store.put_circuit(circuit(PART))
    other = store.put_circuit(circuit(SEED1, model=SEED1_MODEL))
    before = store.similar_circuits(query, first=1)
    assert [s.circuit.id for s in before] == [part]
    assert store.similar_circuits(other, first=1, aligned=True) == []  # no common key yet
    if how == "label_component":
        for head, roles in ROLES1.items():
            store.label_component("toy-2l-seed1", head, roles[0])
    else:  # a later circuit of that model brings the labels
        later = {"input->a0.h3<v>": 1.0, "a1.h0->logits": 1.0}
        store.put_circuit(circuit(later, labels=ROLES1, seed=7, model=SEED1_MODEL))
    after = store.similar_circuits(query, first=1)
    assert [s.circuit.id for s in after] == [other]
    assert after[0].similarity == pytest.approx(1.0)
    canonical = store.similar_circuits(query, first=1, aligned=False)
    assert [s.circuit.id for s in canonical] == [part], "canonical vectors never read labels"


def test_store_similar_circuits_input_errors(store: GraphStore) -> None:
    cid = store.put_circuit(circuit(SEED0))
    with pytest.raises(UnknownCircuitError):
        store.similar_circuits("c_" + "0" * 32)
    with pytest.raises(StoreError, match="page size"):
        store.similar_circuits(cid, first=0)
    assert store.similar_circuits(cid) == [], "nothing else stored"
    empty = store.put_circuit(circuit({}))
    assert store.similar_circuits(empty) == [], "an empty circuit is like nothing"
    assert store.similar_circuits(cid) == [], "and nothing is like it"


def _forget_embeddings(backend: str, store: GraphStore) -> None:
    """Make the store look like one written before embeddings: none stored, migration unrun."""
    if backend in ("sqlite", "postgres"):
        downgrade(store.url, "0003")  # type: ignore[attr-defined]
        return
    store.session.run(  # type: ignore[attr-defined]
        "MATCH (c:Circuit) REMOVE c.embedding, c.role_embedding"
    )
    store.session.run("MATCH (m:Migration {version: '0004'}) DELETE m")  # type: ignore[attr-defined]


def test_store_migration_backfills_embeddings_of_older_circuits(
    backend: str,
    open_backend: Callable[[str], GraphStore],
    docs: dict[str, CircuitDocument],
) -> None:
    store = open_backend(backend)
    ids = load(store, docs)
    store.label_component("toy-2l", "a0.h3", PREV_TOKEN)
    answers = {
        (n, a): store.similar_circuits(c, aligned=a) for n, c in ids.items() for a in (True, False)
    }
    _forget_embeddings(backend, store)
    if backend not in ("sqlite", "postgres"):
        assert store.similar_circuits(ids["step1000"]) == [], "no vector indexed"
    store.migrate()
    assert {
        (n, a): store.similar_circuits(c, aligned=a) for n, c in ids.items() for a in (True, False)
    } == answers
