"""Mechanism embeddings in the embedded store: written with each circuit, kept current as role
labels change, and scanned exactly to answer ``similar_circuits``.

The hashed vectors (``..embedding.dense``) live in ``circuit_embeddings``; a query reads all
of them (1 KiB per circuit) and takes the nearest by an exact dot product in numpy: the
embedded store's stand-in for a vector index, with the same candidates an exact index would
give. Those candidates are then re-ranked by the exact sparse cosine, recomputed here from
``circuit_edges`` and the model's labels, as the Cypher store does from its edge arrays.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from ..embedding import (
    DIMENSIONS,
    canonical_embedding,
    dense,
    role_aligned_embedding,
)
from .embedding_tables import CircuitEmbedding
from .models import (
    CircuitComponent,
    CircuitEdge,
    CircuitRow,
    ComponentLabel,
    ComponentRow,
    GraphEdge,
)

CHUNK = 500
Labels = dict[str, list[str]]


def pack(vector: Sequence[float] | None) -> bytes | None:
    """Little-endian float32 bytes of a hashed vector (None stays None)."""
    if vector is None:
        return None
    return struct.pack(f"<{len(vector)}f", *vector)


def edge_scores(conn: Connection, pks: Sequence[int]) -> dict[int, list[tuple[str, float | None]]]:
    """(edge name, score) per stored edge of each circuit."""
    out: dict[int, list[tuple[str, float | None]]] = {pk: [] for pk in pks}
    for start in range(0, len(pks), CHUNK):
        chunk = list(pks[start : start + CHUNK])
        for pk, name, score in (
            conn.execute(
                select(CircuitEdge.circuit_pk, GraphEdge.name, CircuitEdge.score)
                .join(GraphEdge, GraphEdge.id == CircuitEdge.edge_id)
                .where(CircuitEdge.circuit_pk.in_(chunk))
            )
            .tuples()
            .all()
        ):
            out[pk].append((name, score))
    return out


def model_labels(conn: Connection, model_ids: Iterable[int]) -> dict[int, Labels]:
    """Role labels of each model's components."""
    ids = sorted(set(model_ids))
    out: dict[int, Labels] = {m: {} for m in ids}
    if not ids:
        return out
    for model_id, name, label in (
        conn.execute(
            select(ComponentLabel.model_id, ComponentLabel.component, ComponentLabel.label).where(
                ComponentLabel.model_id.in_(ids)
            )
        )
        .tuples()
        .all()
    ):
        out[model_id].setdefault(name, []).append(label)
    return out


def embedding_row(
    circuit_pk: int, edges: Sequence[tuple[str, float | None]], labels: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """The ``circuit_embeddings`` row of one circuit."""
    return {
        "circuit_pk": circuit_pk,
        "dimensions": DIMENSIONS,
        "canonical": pack(dense(canonical_embedding(edges))),
        "aligned": pack(dense(role_aligned_embedding(edges, labels))),
    }


def write_embedding(
    conn: Connection,
    circuit_pk: int,
    edges: Sequence[tuple[str, float | None]],
    labels: Mapping[str, Sequence[str]],
) -> None:
    """Store a new circuit's embeddings."""
    conn.execute(insert(CircuitEmbedding), [embedding_row(circuit_pk, edges, labels)])


def refresh_aligned(conn: Connection, model_id: int, components: Iterable[str]) -> int:
    """Recompute the role-aligned vectors of the model's circuits holding ``components``.

    A new role label changes the role-aligned embedding of exactly the circuits with that
    component; the canonical embeddings never depend on labels. Returns how many changed.
    """
    names = sorted(set(components))
    if not names:
        return 0
    pks = sorted(
        conn.execute(
            select(CircuitComponent.circuit_pk)
            .join(ComponentRow, ComponentRow.id == CircuitComponent.component_id)
            .where(ComponentRow.model_id == model_id, ComponentRow.name.in_(names))
            .distinct()
        ).scalars()
    )
    labels = model_labels(conn, [model_id])[model_id]
    stmt = (
        update(CircuitEmbedding)
        .where(CircuitEmbedding.circuit_pk == bindparam("b_pk"))
        .values(aligned=bindparam("b_aligned"))
    )
    for start in range(0, len(pks), CHUNK):
        chunk = pks[start : start + CHUNK]
        edges = edge_scores(conn, chunk)
        rows = [
            {"b_pk": pk, "b_aligned": pack(dense(role_aligned_embedding(edges[pk], labels)))}
            for pk in chunk
        ]
        conn.execute(stmt, rows)
    return len(pks)


def backfill(conn: Connection) -> int:
    """Embeddings for every circuit that has none (circuits stored before revision 0004)."""
    done = select(CircuitEmbedding.circuit_pk)
    rows = conn.execute(
        select(CircuitRow.pk, CircuitRow.model_id)
        .where(CircuitRow.pk.not_in(done))
        .order_by(CircuitRow.pk)
    ).all()
    labels = model_labels(conn, (model_id for _, model_id in rows))
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        edges = edge_scores(conn, [pk for pk, _ in chunk])
        conn.execute(
            insert(CircuitEmbedding),
            [embedding_row(pk, edges[pk], labels[model_id]) for pk, model_id in chunk],
        )
    return len(rows)


def nearest(conn: Connection, query: Sequence[float], *, aligned: bool, k: int) -> list[int]:
    """The ``k`` circuits whose hashed vector has the largest dot product with ``query``.

    An exact scan: every stored vector is read and multiplied in numpy (10,000 circuits are
    10 MB). Ties are broken by circuit pk so that the answer is deterministic.
    """
    import numpy as np

    column = CircuitEmbedding.aligned if aligned else CircuitEmbedding.canonical
    rows = [
        (pk, blob)
        for pk, blob in conn.execute(
            select(CircuitEmbedding.circuit_pk, column).where(
                column.is_not(None), CircuitEmbedding.dimensions == DIMENSIONS
            )
        )
        .tuples()
        .all()
        if blob is not None
    ]
    if not rows:
        return []
    pks = np.fromiter((pk for pk, _ in rows), dtype=np.int64, count=len(rows))
    matrix = np.frombuffer(b"".join(blob for _, blob in rows), dtype="<f4").reshape(
        len(rows), DIMENSIONS
    )
    scores = matrix.astype(np.float64) @ np.asarray(query, dtype=np.float64)
    if k < len(rows):
        keep = np.argpartition(-scores, k - 1)[:k]
        pks, scores = pks[keep], scores[keep]
    order = np.lexsort((pks, -scores))
    return [int(pk) for pk in pks[order]]
