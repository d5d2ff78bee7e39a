"""A positional run's dense scores: every edge at every position, as one artifact.

A positional circuit document keeps its summed edges and only the positional edges its
selection kept (issue 18); the method scored all ``n_edges x Q`` of them (519,856 for GPT-2
small at 16 tokens), and re-selecting, plotting a head across the prompt or exporting needs
them all. They go to one safetensors file per circuit beside its summed dense scores
(``ArtifactStore``, name ``<sha256>.positions.safetensors``): a float32 ``[n_edges, Q]``
tensor ``scores`` and, in the header, the edge names, the position labels, the mode and each
label's token index. Float32 because the methods score in float32; a float64 copy would
double the bytes and add no digits.

The stored circuit's provenance records the artifact (``extra["positional_scores"]``: uri,
sha256, shape, dtype), so ``load_positional`` finds it from the circuit alone. A document
written by ``circuitreg discover`` names the file beside it instead (``"file"``), and
``circuitreg import`` stores it from there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from circuitreg.schema import CircuitDocument
from circuitreg.services.artifacts import (
    POSITIONAL_SUFFIX,
    ArtifactError,
    ArtifactRef,
    ArtifactStore,
)
from circuitreg.services.interchange.stored import StoredCircuit, store_document
from circuitreg.services.stores.types import GraphStore

POSITIONAL_FORMAT = "circuitreg-positional-scores/1"
PROVENANCE_KEY = "positional_scores"


@dataclass(frozen=True)
class PositionalScores:
    """Scores ``[n_edges, Q]`` of every edge (``edge_names``, the graph's order) at every
    position label (``labels``; ``indices`` their token index where all prompts share one)."""

    edge_names: tuple[str, ...]
    labels: tuple[str, ...]
    mode: str
    indices: tuple[int | None, ...]
    scores: np.ndarray

    def __post_init__(self) -> None:
        shape = (len(self.edge_names), len(self.labels))
        if self.scores.ndim != 2 or tuple(self.scores.shape) != shape:
            raise ArtifactError(
                f"positional scores of shape {tuple(self.scores.shape)} for {shape[0]} edges "
                f"and {shape[1]} position labels; give one score per edge and label"
            )
        if len(self.indices) != len(self.labels):
            raise ArtifactError(f"{len(self.indices)} indices for {len(self.labels)} labels")
        if self.mode not in ("index", "spans"):
            raise ArtifactError(f"position mode {self.mode!r} is not index or spans")
        for what, names in (("edge name", self.edge_names), ("position label", self.labels)):
            if len(set(names)) != len(names):
                dup = next(n for i, n in enumerate(names) if n in names[:i])
                raise ArtifactError(f"{what} {dup!r} given twice")

    def at(self, edge: str, label: str) -> float:
        """One edge's score at one position label."""
        try:
            row, column = self.edge_names.index(edge), self.labels.index(label)
        except ValueError:
            raise KeyError(f"no positional score for {edge!r} at {label!r}") from None
        return float(self.scores[row, column])

    def summed(self) -> dict[str, float]:
        """Each edge's score summed over positions (the unpositioned run's, to rounding)."""
        totals = self.scores.astype(np.float64).sum(axis=1)
        return dict(zip(self.edge_names, totals.tolist(), strict=True))

    def check_document(self, doc: CircuitDocument) -> None:
        """Raise unless these are the scores of ``doc``'s position axis."""
        axis = doc.positions
        if axis is None:
            raise ArtifactError(f"circuit {doc.id} has no position axis for positional scores")
        if (axis.mode, tuple(axis.labels)) != (self.mode, self.labels):
            raise ArtifactError(
                f"positional scores at {self.mode} {list(self.labels)} do not match circuit "
                f"{doc.id}'s axis ({axis.mode} {list(axis.labels)})"
            )


def encode_positional(circuit_id: str, scores: PositionalScores) -> bytes:
    """The artifact bytes (deterministic, so equal scores share a file and a checksum)."""
    header = {
        "format": POSITIONAL_FORMAT,
        "circuit_id": circuit_id,
        "edge_names": list(scores.edge_names),
        "labels": list(scores.labels),
        "mode": scores.mode,
        "indices": list(scores.indices),
    }
    metadata = {"circuitreg": json.dumps(header, separators=(",", ":"))}
    values = np.ascontiguousarray(scores.scores, dtype=np.float32)
    return bytes(save_safetensors({"scores": values}, metadata=metadata))


def decode_positional(data: bytes) -> tuple[str, PositionalScores]:
    """The circuit id and the scores of a positional artifact."""
    try:
        tensors = load_safetensors(data)
        header_len = int.from_bytes(data[:8], "little")
        raw = json.loads(data[8 : 8 + header_len]).get("__metadata__", {})
        meta: dict[str, Any] = json.loads(raw.get("circuitreg", "{}"))
    except Exception as exc:
        raise ArtifactError(f"unreadable positional score artifact: {exc}") from None
    if meta.get("format") != POSITIONAL_FORMAT or "scores" not in tensors:
        raise ArtifactError(f"not a {POSITIONAL_FORMAT} artifact")
    scores = PositionalScores(
        edge_names=tuple(meta["edge_names"]),
        labels=tuple(meta["labels"]),
        mode=str(meta["mode"]),
        indices=tuple(meta["indices"]),
        scores=tensors["scores"],
    )
    return str(meta.get("circuit_id", "")), scores


def put_positional(
    artifacts: ArtifactStore, circuit_id: str, scores: PositionalScores
) -> tuple[ArtifactRef, bool]:
    """Write a circuit's positional scores; the reference and whether the file was new."""
    return artifacts.write_bytes(
        circuit_id, encode_positional(circuit_id, scores), POSITIONAL_SUFFIX
    )


def get_positional(artifacts: ArtifactStore, ref: ArtifactRef | str) -> PositionalScores:
    """The positional scores behind ``ref``, verified against its checksum."""
    return decode_positional(artifacts.read_verified(ref))[1]


def provenance_entry(ref: ArtifactRef | None, scores: PositionalScores, file: str | None = None
                     ) -> dict[str, Any]:  # fmt: skip
    """What a document's provenance says about its positional artifact."""
    entry: dict[str, Any] = {"shape": list(scores.scores.shape), "dtype": "float32"}
    if ref is not None:
        entry.update(uri=ref.uri, sha256=ref.sha256)
    if file is not None:
        entry["file"] = file
    return entry


def with_positional_entry(doc: CircuitDocument, entry: dict[str, Any] | None) -> CircuitDocument:
    """``doc`` whose provenance names its positional artifact (or none); same id."""
    extra = {k: v for k, v in doc.provenance.extra.items() if k != PROVENANCE_KEY}
    if entry is not None:
        extra[PROVENANCE_KEY] = entry
    provenance = doc.provenance.model_copy(update={"extra": extra})
    return doc.model_copy(update={"provenance": provenance})


@dataclass(frozen=True)
class StoredPositional:
    """What ``store_positional_document`` wrote."""

    stored: StoredCircuit
    positional_scores: ArtifactRef | None


def store_positional_document(
    store: GraphStore,
    artifacts: ArtifactStore,
    doc: CircuitDocument,
    scores: PositionalScores | None,
    *,
    job_id: str | None = None,
) -> StoredPositional:
    """Store the circuit, its summed dense scores and (given) its positional ones.

    The positional artifact is written first and named in the stored provenance; it is
    removed again if the circuit cannot be stored, so a failure leaves nothing behind."""
    if scores is None:
        return StoredPositional(store_document(store, artifacts, doc, job_id=job_id), None)
    scores.check_document(doc)
    ref, created = put_positional(artifacts, doc.id, scores)
    try:
        doc = with_positional_entry(doc, provenance_entry(ref, scores))
        stored = store_document(store, artifacts, doc, job_id=job_id)
    except BaseException:
        if created:
            artifacts.delete(ref)
        raise
    return StoredPositional(stored, ref)


def load_positional(
    store: GraphStore, artifacts: ArtifactStore, ref: str
) -> PositionalScores | None:
    """A stored circuit's positional scores (by id or alias), or None where it has none."""
    circuit_id = store.resolve(ref)
    doc = store.get_circuit(circuit_id) if circuit_id else None
    if doc is None:
        raise ArtifactError(f"no stored circuit {ref!r}")
    uri = doc.provenance.extra.get(PROVENANCE_KEY, {}).get("uri")
    return get_positional(artifacts, uri) if uri else None
