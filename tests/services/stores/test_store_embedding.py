"""Mechanism embeddings (services/stores/embedding.py): weights, role alignment, cosine, the
hashed vectors the indexes hold, ranking, and the cosines of the consistency report."""

from __future__ import annotations

import math
import random
import re

import pytest

from circuitreg.migrations.neo4j import MIGRATIONS_DIR
from circuitreg.services.analysis.consistency import compare_circuits
from circuitreg.services.stores.embedding import (
    DIMENSIONS,
    bucket,
    candidate_count,
    canonical_embedding,
    cosine,
    dense,
    document_embedding,
    edge_weights,
    rank,
    role_aligned_embedding,
    role_aligned_weights,
)

from .conftest import INDUCTION, PREV_TOKEN, STEP500, STEP1000, circuit

K_COMPOSITION = {
    "input->a0.h1<v>": 1.0,
    "a0.h1->a1.h2<k>": 2.0,
    "input->a1.h2<q>": 0.5,
    "a1.h2->logits": 3.0,
}
# The same mechanism on other heads (another seed): previous-token a0.h3, induction a1.h0.
PERMUTED = {
    "input->a0.h3<v>": 1.0,
    "a0.h3->a1.h0<k>": 2.0,
    "input->a1.h0<q>": 0.5,
    "a1.h0->logits": 3.0,
}
ROLES_A = {"a0.h1": (PREV_TOKEN,), "a1.h2": (INDUCTION,)}
ROLES_B = {"a0.h3": (PREV_TOKEN,), "a1.h0": (INDUCTION,)}


def test_edge_weights_are_absolute_scores_summed_over_positions() -> None:
    weights = edge_weights(
        [("a->b", -0.5), ("a->b", 0.25), ("c->d", None), ("e->f", 0.0), ("g->h", math.nan)]
    )
    assert weights == {"a->b": 0.75, "c->d": 1.0, "g->h": 1.0}, "0 dropped, unscored 1"
    assert edge_weights([("a->b", 0.0), ("c->d", 0.0)]) == {"a->b": 1.0, "c->d": 1.0}
    assert edge_weights([]) == {}


def test_canonical_embedding_is_unit_length_and_ignores_scale_and_sign() -> None:
    edges = list(K_COMPOSITION.items())
    emb = canonical_embedding(edges)
    assert math.fsum(v * v for v in emb.values()) == pytest.approx(1.0)
    scaled = canonical_embedding([(k, -10 * v) for k, v in edges])
    assert cosine(emb, scaled) == pytest.approx(1.0)
    assert cosine(emb, emb) == pytest.approx(1.0)
    assert cosine(emb, canonical_embedding([("input->logits", 1.0)])) == 0.0
    assert cosine(emb, {}) == 0.0


def test_cosine_is_bit_identical_whatever_the_order_of_the_rows() -> None:
    rng = random.Random(0)
    a = [(f"input->a{i % 4}.h{i % 12}<{'qkv'[i % 3]}>", rng.uniform(-1, 1)) for i in range(300)]
    b = [(name, rng.uniform(-1, 1)) for name, _ in a[:200]]
    expected = cosine(canonical_embedding(a), canonical_embedding(b))
    for _ in range(5):
        rng.shuffle(a)
        rng.shuffle(b)
        assert cosine(canonical_embedding(a), canonical_embedding(b)) == expected


def test_role_alignment_sees_the_same_mechanism_on_other_heads() -> None:
    a, b = list(K_COMPOSITION.items()), list(PERMUTED.items())
    canonical = cosine(canonical_embedding(a), canonical_embedding(b))
    aligned = cosine(role_aligned_embedding(a, ROLES_A), role_aligned_embedding(b, ROLES_B))
    assert aligned == pytest.approx(1.0)
    assert canonical < 0.5
    keys = role_aligned_embedding(a, ROLES_A)
    assert f"role:{PREV_TOKEN}->role:{INDUCTION}<k>" in keys
    assert f"role:{INDUCTION}->logits" in keys


def test_unlabelled_components_keep_their_canonical_names() -> None:
    edges = list(K_COMPOSITION.items())
    assert role_aligned_embedding(edges, {}) == canonical_embedding(edges)
    partial = role_aligned_embedding(edges, {"a1.h2": (INDUCTION,)})
    assert f"a0.h1->role:{INDUCTION}<k>" in partial and "input->a0.h1<v>" in partial


def test_a_component_with_two_roles_splits_its_weight() -> None:
    weights = role_aligned_weights({"a0.h1->logits": 1.0}, {"a0.h1": ("x", "y")})
    assert weights == {"role:x->logits": 0.5, "role:y->logits": 0.5}


def test_dense_vector_has_fixed_length_unit_norm_and_stable_buckets() -> None:
    vector = dense(canonical_embedding(list(K_COMPOSITION.items())))
    assert vector is not None and len(vector) == DIMENSIONS
    assert math.fsum(x * x for x in vector) == pytest.approx(1.0)
    assert dense({}) is None
    # BLAKE2b, not Python's salted hash(): stored vectors stay valid across processes.
    assert bucket("a0.h1->a1.h2<k>") == (37, -1.0)
    assert bucket("input->logits") == (198, 1.0)


def test_dense_dot_product_estimates_the_sparse_cosine() -> None:
    rng = random.Random(1)
    pool = [
        f"a{layer}.h{h}->a{layer + 1}.h{g}<{r}>"
        for layer in range(4)
        for h in range(8)
        for g in range(8)
        for r in "qkv"
    ]
    errors = []
    for _ in range(20):
        shared = rng.sample(pool, 150)
        a = canonical_embedding([(k, rng.random()) for k in shared + rng.sample(pool, 150)])
        b = canonical_embedding([(k, rng.random()) for k in shared + rng.sample(pool, 150)])
        da, db = dense(a), dense(b)
        assert da is not None and db is not None
        errors.append(abs(math.fsum(x * y for x, y in zip(da, db, strict=True)) - cosine(a, b)))
    assert max(errors) < 0.25 and sum(errors) / len(errors) < 0.1


def test_dense_vector_never_cancels_to_zero() -> None:
    # Same bucket, opposite signs, equal weights: the signed hash sums to the zero vector,
    # which no vector index holds; the unsigned hash is used instead.
    assert bucket("input->a0.h2<v>")[0] == bucket("input->a0.h7<q>")[0]
    assert bucket("input->a0.h2<v>")[1] != bucket("input->a0.h7<q>")[1]
    vector = dense(canonical_embedding([("input->a0.h2<v>", 1.0), ("input->a0.h7<q>", 1.0)]))
    assert vector is not None and math.fsum(x * x for x in vector) == pytest.approx(1.0)


def test_rank_orders_by_cosine_then_id_and_leaves_out_itself_and_strangers() -> None:
    query = {"x": 1.0}
    candidates = {
        "q": {"x": 1.0},
        "b": {"x": 1.0, "y": 1.0},
        "a": {"x": 1.0, "y": 1.0},
        "z": {"y": 1.0},
    }
    assert rank(query, candidates, 10, exclude="q") == [
        ("a", pytest.approx(math.sqrt(0.5))),
        ("b", pytest.approx(math.sqrt(0.5))),
    ]
    assert [cid for cid, _ in rank(query, candidates, 1, exclude="q")] == ["a"]
    assert candidate_count(10) >= 40 and candidate_count(100) == 400


def test_consistency_report_gives_both_cosines() -> None:
    a = circuit(K_COMPOSITION, labels=ROLES_A)
    b = circuit(PERMUTED, labels=ROLES_B)
    report = compare_circuits(a, b)
    assert report.canonical_cosine == cosine(
        document_embedding(a, aligned=False), document_embedding(b, aligned=False)
    )
    assert report.role_aligned_cosine == pytest.approx(1.0)
    assert report.canonical_cosine < 0.5
    same = compare_circuits(circuit(STEP500), circuit(STEP1000))
    assert 0 < same.canonical_cosine == same.role_aligned_cosine < 1, "no labels: equal"


def test_vector_index_migration_is_built_for_the_embedding_length() -> None:
    text = (MIGRATIONS_DIR / "V0003__vector_indexes.cypher").read_text()
    dimensions = re.findall(r"`vector\.dimensions`: (\d+)", text)
    assert dimensions == [str(DIMENSIONS)] * 2
