"""Dense score artifacts: a score for every edge of the graph, kept beside the graph store.

The graph store keeps only a circuit's own edges (hundreds); the method scored every edge of
the model (32,491 for GPT-2 small), and exports such as MIB's need them all. Those scores
go to one safetensors file per circuit (float64 scores, edge names in the header metadata;
written through numpy, no torch) in a directory or any fsspec URL (``s3://...``,
``memory://...``).

A positional run's dense ``[n_edges, Q]`` scores (one per edge and position label) are a
second artifact of the same circuit, ``<sha256>.positions.safetensors``
(``circuitreg.services.positional_scores`` encodes them; ``write_bytes`` stores them).

Files are content-addressed: the name is the SHA-256 of the bytes, so a URI alone says
what it must contain (``ArtifactRef.from_uri``), re-storing the same scores writes nothing
new, and a damaged or swapped file is detected on read. Local writes go to a temporary
file that is renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

ARTIFACT_FORMAT = "circuitreg-dense-scores/1"
_NAME = re.compile(r"(?P<sha>[0-9a-f]{64})(?P<kind>\.positions)?\.safetensors$")
POSITIONAL_SUFFIX = ".positions.safetensors"
"""Name ending of a positional run's dense ``[n_edges, Q]`` scores (``positional_scores``)."""


class ArtifactError(RuntimeError):
    """An artifact that is missing, malformed or cannot be written."""


class ArtifactChecksumError(ArtifactError):
    """The bytes read back do not have the SHA-256 the reference promises."""


@dataclass(frozen=True)
class ArtifactRef:
    """Where a dense score file is and the SHA-256 its bytes must have."""

    uri: str
    sha256: str

    @classmethod
    def from_uri(cls, uri: str) -> ArtifactRef:
        """The reference of a URI written by ``put_scores`` (its name is its checksum)."""
        match = _NAME.search(uri)
        if not match:
            raise ArtifactError(f"not a dense score artifact URI (no checksum name): {uri!r}")
        return cls(uri=uri, sha256=match["sha"])


def encode_scores(circuit_id: str, edge_names: Sequence[str], scores: Sequence[float]) -> bytes:
    """The artifact bytes: deterministic for equal inputs, so equal scores share a file."""
    names = list(edge_names)
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or len(names) != values.shape[0]:
        raise ArtifactError(
            f"{len(names)} edge names but scores of shape {tuple(values.shape)}; "
            "give one score per edge"
        )
    if len(set(names)) != len(names):
        dup = next(n for i, n in enumerate(names) if n in names[:i])
        raise ArtifactError(f"edge name {dup!r} given twice")
    # One metadata key only: safetensors keeps metadata in a hash map whose order varies
    # between runs, and equal scores must give equal bytes (hence equal checksums).
    header = {"format": ARTIFACT_FORMAT, "circuit_id": circuit_id, "edge_names": names}
    metadata = {"circuitreg": json.dumps(header, separators=(",", ":"))}
    return bytes(save_safetensors({"scores": values}, metadata=metadata))


def decode_scores(data: bytes) -> tuple[str, dict[str, float]]:
    """The circuit id and the ``edge name -> score`` mapping, in stored order."""
    try:
        tensors = load_safetensors(data)
        # safetensors.numpy.load returns only tensors; the metadata sits in the JSON header
        # (8-byte little-endian length, then the header) as the format specifies.
        header_len = int.from_bytes(data[:8], "little")
        raw = json.loads(data[8 : 8 + header_len]).get("__metadata__", {})
        metadata: dict[str, Any] = json.loads(raw.get("circuitreg", "{}"))
    except Exception as exc:
        raise ArtifactError(f"unreadable dense score artifact: {exc}") from None
    if metadata.get("format") != ARTIFACT_FORMAT or "scores" not in tensors:
        raise ArtifactError(f"not a {ARTIFACT_FORMAT} artifact")
    names = metadata["edge_names"]
    values = tensors["scores"]
    if len(names) != len(values):
        raise ArtifactError(f"{len(names)} edge names but {len(values)} scores")
    return str(metadata.get("circuit_id", "")), dict(zip(names, values.tolist(), strict=True))


class ArtifactStore:
    """Dense score files under ``base_url`` (a directory path or an fsspec URL)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._fs, self._root = fsspec.core.url_to_fs(self.base_url)

    def put_scores(
        self, circuit_id: str, edge_names: Sequence[str], scores: Sequence[float]
    ) -> ArtifactRef:
        """Write the scores (once: identical content is not rewritten); return the reference."""
        return self.write_scores(circuit_id, edge_names, scores)[0]

    def write_scores(
        self, circuit_id: str, edge_names: Sequence[str], scores: Sequence[float]
    ) -> tuple[ArtifactRef, bool]:
        """Like ``put_scores``, also saying whether the file was new (False: already there)."""
        return self.write_bytes(circuit_id, encode_scores(circuit_id, edge_names, scores))

    def write_bytes(
        self, circuit_id: str, data: bytes, suffix: str = ".safetensors"
    ) -> tuple[ArtifactRef, bool]:
        """Store encoded artifact bytes under the circuit, named by their SHA-256 and
        ``suffix`` (``.safetensors``, or ``POSITIONAL_SUFFIX`` for positional scores); say
        whether the file was new."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", circuit_id):
            raise ArtifactError(f"circuit id {circuit_id!r} is not a safe file name")
        if suffix not in (".safetensors", POSITIONAL_SUFFIX):
            raise ArtifactError(f"artifact suffix {suffix!r} is not .safetensors or positional")
        sha = hashlib.sha256(data).hexdigest()
        ref = ArtifactRef(uri=f"{self.base_url}/{circuit_id}/{sha}{suffix}", sha256=sha)
        directory = f"{self._root}/{circuit_id}"
        path = f"{directory}/{sha}{suffix}"
        if self._fs.exists(path):
            return ref, False
        self._fs.makedirs(directory, exist_ok=True)
        if isinstance(self._fs, LocalFileSystem):
            self._write_local(directory, path, data)
        else:
            # Object stores make an object visible only once it is complete; a temporary
            # name plus a move keeps other fsspec filesystems from exposing partial files.
            temp = f"{directory}/.{sha}.{uuid.uuid4().hex}.tmp"
            self._fs.pipe_file(temp, data)
            self._fs.mv(temp, path)
        return ref, True

    @staticmethod
    def _write_local(directory: str, path: str, data: bytes) -> None:
        fd, temp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
        try:
            os.chmod(temp, 0o644)  # mkstemp makes 0600; artifacts are shared read-only data
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            if os.path.exists(temp):
                os.unlink(temp)
            raise

    def read_verified(self, ref: ArtifactRef | str) -> bytes:
        """The artifact's bytes after checking their SHA-256."""
        ref = ArtifactRef.from_uri(ref) if isinstance(ref, str) else ref
        try:
            with fsspec.open(ref.uri, "rb") as handle:
                data: bytes = handle.read()
        except FileNotFoundError:
            raise ArtifactError(f"dense score artifact not found: {ref.uri}") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != ref.sha256:
            raise ArtifactChecksumError(
                f"checksum mismatch for {ref.uri}: expected sha256 {ref.sha256}, got {actual}"
            )
        return data

    def get_scores(self, ref: ArtifactRef | str) -> dict[str, float]:
        """``edge name -> score`` in stored order, verified against the checksum."""
        return decode_scores(self.read_verified(ref))[1]

    def delete(self, ref: ArtifactRef | str) -> None:
        """Remove an artifact (used to undo a write whose circuit could not be stored)."""
        ref = ArtifactRef.from_uri(ref) if isinstance(ref, str) else ref
        fs, path = fsspec.core.url_to_fs(ref.uri)
        if fs.exists(path):
            fs.rm(path)

    def exists(self, ref: ArtifactRef | str) -> bool:
        """Whether the artifact is present (not whether it is intact)."""
        ref = ArtifactRef.from_uri(ref) if isinstance(ref, str) else ref
        fs, path = fsspec.core.url_to_fs(ref.uri)
        return bool(fs.exists(path))
