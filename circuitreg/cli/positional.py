"""A positional circuit's dense scores between the CLI's files and the registry.

``discover --positions`` writes the document and, beside it, ``<out>.positions.safetensors``
(every edge at every position, ``circuitreg.services.positional_scores``), named with its
SHA-256 in the document's provenance. ``import`` of that document (and ``discover --store``)
puts the file into the artifact store and the stored provenance names its URI instead, so
the registry keeps the dense scores of every positional circuit it holds.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from circuitreg.schema import CircuitDocument

if TYPE_CHECKING:
    from circuitreg.services.positional_scores import PositionalScores, StoredPositional


def positional_path(out: Path) -> Path:
    """Where the dense positional scores of the document at ``out`` go."""
    return out.with_name(out.stem + ".positions.safetensors")


def write_positional_file(
    out: Path, doc: CircuitDocument, scores: PositionalScores
) -> tuple[CircuitDocument, Path]:
    """Write the scores beside ``out`` (atomically) and return the document naming them."""
    from circuitreg.services.positional_scores import (
        encode_positional,
        provenance_entry,
        with_positional_entry,
    )

    path = positional_path(out)
    data = encode_positional(doc.id, scores)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_bytes(data)
    os.replace(partial, path)
    entry = provenance_entry(None, scores, file=path.name)
    entry["sha256"] = hashlib.sha256(data).hexdigest()
    return with_positional_entry(doc, entry), path


def read_positional_file(source: Path, doc: CircuitDocument) -> PositionalScores | None:
    """The scores a document written by ``discover`` names beside itself, checked against
    its checksum and circuit; None when the document names no file. ``ValueError`` says what
    is missing or wrong."""
    from circuitreg.services.artifacts import ArtifactError
    from circuitreg.services.positional_scores import PROVENANCE_KEY, decode_positional

    entry: dict[str, Any] = doc.provenance.extra.get(PROVENANCE_KEY) or {}
    name = entry.get("file")
    if not name:
        return None
    path = source.with_name(Path(str(name)).name)  # only beside the document
    if not path.is_file():
        raise ValueError(f"{source} names its positional scores {path.name}, which is missing")
    data = path.read_bytes()
    if entry.get("sha256") and hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ValueError(f"{path}: checksum differs from the one {source} records")
    try:
        circuit_id, scores = decode_positional(data)
        scores.check_document(doc)
    except ArtifactError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if circuit_id != doc.id:
        raise ValueError(f"{path} holds the scores of circuit {circuit_id}, not {doc.id}")
    return scores


def store_with_positions(doc: CircuitDocument, scores: PositionalScores | None) -> StoredPositional:
    """Store a document (and its dense and positional scores) in the configured registry."""
    from circuitreg.services.artifacts import ArtifactStore
    from circuitreg.services.positional_scores import store_positional_document
    from circuitreg.services.stores.factory import open_store
    from circuitreg.settings import load_settings_or_exit

    settings = load_settings_or_exit()
    store = open_store(settings)
    try:
        store.migrate()
        artifacts = ArtifactStore(settings.resolved_artifact_url)
        return store_positional_document(store, artifacts, doc, scores)
    finally:
        store.close()
