"""The dense-score artifact store: content-addressed, verified, atomic, any fsspec URL."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from circuitreg.services.artifacts import (
    ArtifactChecksumError,
    ArtifactError,
    ArtifactRef,
    ArtifactStore,
)

NAMES = ["input->a0.h0<q>", "a0.h0->m0", "m0->logits@3"]
SCORES = [0.1 + 0.2, -3.0e-7, 12.5]


def test_put_and_get_scores_exactly_in_order(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    ref = store.put_scores("c_abc", NAMES, SCORES)
    assert ref.uri.startswith(str(tmp_path / "artifacts" / "c_abc"))
    assert ref.uri.endswith(f"{ref.sha256}.safetensors")
    scores = store.get_scores(ref)
    assert list(scores) == NAMES and list(scores.values()) == SCORES
    assert store.get_scores(ref.uri) == scores  # the URI alone carries the checksum
    assert ArtifactRef.from_uri(ref.uri) == ref


def test_same_scores_same_file_and_no_temporary_files_left(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    first, created = store.write_scores("c_abc", NAMES, SCORES)
    second, created_again = store.write_scores("c_abc", NAMES, SCORES)
    assert first == second and created and not created_again
    assert [p.name for p in (tmp_path / "c_abc").iterdir()] == [f"{first.sha256}.safetensors"]


def test_checksum_mismatch_is_detected(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    ref = store.put_scores("c_abc", NAMES, SCORES)
    path = Path(ref.uri)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # flip one bit of the last score
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactChecksumError, match=f"expected sha256 {ref.sha256}"):
        store.get_scores(ref)
    other = store.put_scores("c_abc", NAMES, [1.0, 2.0, 3.0])
    with pytest.raises(ArtifactChecksumError):
        store.get_scores(ArtifactRef(uri=other.uri, sha256=ref.sha256))


def test_fsspec_memory_filesystem() -> None:
    base = f"memory://artifacts-{uuid.uuid4().hex}"
    store = ArtifactStore(base)
    ref = store.put_scores("c_mem", NAMES, SCORES)
    assert ref.uri.startswith(base + "/c_mem/")
    assert list(store.get_scores(ref).values()) == SCORES
    store.delete(ref)
    assert not store.exists(ref)
    with pytest.raises(ArtifactError, match="not found"):
        store.get_scores(ref)


def test_bad_inputs_are_refused_before_writing(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path))
    with pytest.raises(ArtifactError, match="3 edge names but scores of shape"):
        store.put_scores("c_abc", NAMES, [1.0])
    with pytest.raises(ArtifactError, match="given twice"):
        store.put_scores("c_abc", [*NAMES, NAMES[0]], [*SCORES, 1.0])
    with pytest.raises(ArtifactError, match="not a safe file name"):
        store.put_scores("../escape", NAMES, SCORES)
    with pytest.raises(ArtifactError, match="no checksum name"):
        ArtifactRef.from_uri(str(tmp_path / "scores.safetensors"))
    assert list(tmp_path.iterdir()) == []


def test_a_large_dense_artifact_round_trips(tmp_path: Path) -> None:
    names = [f"a{i // 144}.h{i % 12}->m{i % 7}" for i in range(32_491)]
    names = [f"{n}#{i}" for i, n in enumerate(names)]
    scores = [i * 1e-5 - 0.1 for i in range(32_491)]
    store = ArtifactStore(str(tmp_path))
    ref = store.put_scores("c_big", names, scores)
    assert Path(ref.uri).stat().st_size < 2_000_000
    back = store.get_scores(ref)
    assert list(back) == names and list(back.values()) == scores
