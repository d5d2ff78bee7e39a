"""Dense positional scores as artifacts (issue 18): every edge at every position label in one
content-addressed safetensors file, named in the stored circuit's provenance, removed again
when the circuit cannot be stored, refused when it belongs to another axis."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from circuitreg.schema import CircuitDocument
from circuitreg.services.artifacts import ArtifactError, ArtifactRef, ArtifactStore
from circuitreg.services.positional_scores import (
    PROVENANCE_KEY,
    PositionalScores,
    decode_positional,
    encode_positional,
    get_positional,
    load_positional,
    put_positional,
    store_positional_document,
)
from circuitreg.services.stores.factory import open_store
from circuitreg.settings import get_settings

from .test_interchange_positions import AXIS, SUMMED, positional_doc

EDGES = (*SUMMED, "input->a1.h2<k>")


def scores_for(doc: CircuitDocument, seed: int = 0) -> PositionalScores:
    """Random but fixed float32 scores on the document's axis."""
    assert doc.positions is not None
    values = np.random.default_rng(seed).normal(size=(len(EDGES), len(AXIS.labels)))
    return PositionalScores(EDGES, AXIS.labels, AXIS.mode, AXIS.indices, values.astype("f4"))


def test_positional_scores_round_trip_exactly(tmp_path: Path) -> None:
    doc = positional_doc()
    scores = scores_for(doc)
    artifacts = ArtifactStore(str(tmp_path))
    ref, created = put_positional(artifacts, doc.id, scores)
    again, created_again = put_positional(artifacts, doc.id, scores)
    assert created and not created_again and ref == again
    assert ref.uri.endswith(f"{doc.id}/{ref.sha256}.positions.safetensors")
    assert ArtifactRef.from_uri(ref.uri) == ref
    back = get_positional(artifacts, ref.uri)
    assert back.edge_names == EDGES and back.labels == AXIS.labels
    assert back.mode == "spans" and back.indices == AXIS.indices
    assert back.scores.dtype == np.float32 and np.array_equal(back.scores, scores.scores)
    assert back.at("a0.h1->a1.h2<k>", "S2") == float(scores.scores[1, 1])
    summed = back.summed()
    assert summed["a1.h2->logits"] == pytest.approx(float(scores.scores[3].sum()), rel=1e-6)
    assert decode_positional(encode_positional(doc.id, scores))[0] == doc.id
    # a positional file is not a summed one: each reader refuses the other
    with pytest.raises(ArtifactError, match="not a circuitreg-dense-scores/1"):
        artifacts.get_scores(ref)
    summed_ref = artifacts.put_scores(doc.id, ["a"], [1.0])
    with pytest.raises(ArtifactError, match="not a circuitreg-positional-scores/1"):
        get_positional(artifacts, summed_ref)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scores": np.zeros((5, 3), "f4")}, r"shape \(5, 3\) for 5 edges and 4 position labels"),
        ({"labels": ("S1", "S1", "END", "other")}, "position label 'S1' given twice"),
        ({"indices": (1, 3)}, "2 indices for 4 labels"),
        ({"mode": "tokens"}, "mode 'tokens'"),
    ],
)
def test_malformed_positional_scores_are_refused(change: dict[str, object], message: str) -> None:
    fields = {"edge_names": EDGES, "labels": AXIS.labels, "mode": "spans",
              "indices": AXIS.indices, "scores": np.zeros((5, 4), "f4")}  # fmt: skip
    with pytest.raises(ArtifactError, match=message):
        PositionalScores(**{**fields, **change})  # type: ignore[arg-type]


def test_store_names_the_artifact_in_the_circuit_and_loads_it_back() -> None:
    settings = get_settings()
    store = open_store(settings)
    store.migrate()
    artifacts = ArtifactStore(settings.resolved_artifact_url)
    doc = positional_doc()
    scores = scores_for(doc)
    written = store_positional_document(store, artifacts, doc, scores, job_id=None)
    assert written.stored.circuit_id == doc.id and written.positional_scores is not None
    stored = store.get_circuit(doc.id)
    assert stored is not None
    entry = stored.provenance.extra[PROVENANCE_KEY]
    ref = written.positional_scores
    assert entry == {"uri": ref.uri, "sha256": ref.sha256, "shape": [5, 4], "dtype": "float32"}
    loaded = load_positional(store, artifacts, doc.id)
    assert loaded is not None and np.array_equal(loaded.scores, scores.scores)
    # the summed dense scores are stored as before
    assert written.stored.dense_scores is not None
    store.close()


def test_a_failed_store_leaves_no_positional_artifact(tmp_path: Path) -> None:
    class Broken:
        def put_circuit(self, *args: object, **kwargs: object) -> str:
            raise RuntimeError("the database went away")

    artifacts = ArtifactStore(str(tmp_path))
    doc = positional_doc()
    with pytest.raises(RuntimeError, match="went away"):
        store_positional_document(Broken(), artifacts, doc, scores_for(doc))  # type: ignore[arg-type]
    assert not any(tmp_path.rglob("*.safetensors"))


def test_scores_of_another_axis_are_refused(tmp_path: Path) -> None:
    doc = positional_doc()
    other = PositionalScores(EDGES, ("0", "1"), "index", (0, 1), np.zeros((5, 2), "f4"))
    with pytest.raises(ArtifactError, match=r"do not match circuit c_\w+'s axis \(spans"):
        store_positional_document(open_store(get_settings()), ArtifactStore(str(tmp_path)),
                                  doc, other)  # fmt: skip
    unpositioned = doc.model_copy(update={"positions": None})
    with pytest.raises(ArtifactError, match="has no position axis"):
        scores_for(doc).check_document(unpositioned)
