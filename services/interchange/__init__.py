"""Importers and exporters between ``CircuitDocument`` and the formats researchers use.

Torch-free (the API container imports it). Formats: ``circuitreg``, ``mib`` (MIB /
EAP-IG), ``neuronpedia`` (circuit-tracer attribution graphs), ``acdc``, ``auto-circuit``,
``graphml`` and ``dot`` (export only). Every importer refuses malformed input with an
``InterchangeError`` that says where (JSON path, line and column, key) and what; nothing is
returned, let alone stored, from a file that fails.

    doc = read_document(data, options=ImportOptions(model="gpt2", task="ioi"))  # detected
    data = write_document(doc, "mib")
    exported = export_document(doc, "mib")  # the bytes, and notes on what was left out

Positions (issue 18): ``circuitreg`` and ``graphml`` keep a positional circuit whole; MIB,
ACDC and auto-circuit have no token positions and export it summed, with a note saying so
(``positions.export_notes``).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from circuitreg.schema import CircuitDocument

from .base import ImportOptions
from .detect import detect_format, read_source
from .errors import InterchangeError, UnknownFormatError, UnrepresentableError
from .formats import FORMATS, default_registry
from .positions import export_notes
from .registry import Format, FormatRegistry
from .stored import StoredCircuit, dense_scores, load_document, merge_dense, store_document


def read_document(
    data: bytes | str,
    format: str | None = None,
    options: ImportOptions | None = None,
) -> CircuitDocument:
    """Parse ``data`` in ``format`` (detected from the content when None)."""
    raw = data.encode() if isinstance(data, str) else data
    name = format or detect_format(raw)
    return FORMATS.get(name).read(raw, options)


def write_document(doc: CircuitDocument, format: str) -> bytes:
    """Serialise ``doc`` in ``format``."""
    return FORMATS.get(format).write(doc)


@dataclass(frozen=True)
class Exported:
    """An export: the file's bytes and what it leaves out of the document (e.g. positions)."""

    data: bytes
    notes: tuple[str, ...] = ()


def export_document(doc: CircuitDocument, format: str) -> Exported:
    """Serialise ``doc`` in ``format``, with the notes on what that format cannot hold."""
    return Exported(write_document(doc, format), export_notes(doc, format))


def import_file(
    path: str | Path, format: str | None = None, options: ImportOptions | None = None
) -> CircuitDocument:
    """Read a file (format detected from its content when None)."""
    return read_document(read_source(path), format, options)


def export_file(doc: CircuitDocument, format: str, path: str | Path) -> tuple[str, ...]:
    """Write ``doc`` to ``path`` atomically (temporary file, then rename); returns the
    export's notes on what the format left out."""
    exported = export_document(doc, format)
    data = exported.data
    target = Path(path)
    fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temp, 0o644)
        os.replace(temp, target)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    return exported.notes


__all__ = [
    "FORMATS",
    "Exported",
    "Format",
    "FormatRegistry",
    "ImportOptions",
    "InterchangeError",
    "StoredCircuit",
    "UnknownFormatError",
    "UnrepresentableError",
    "default_registry",
    "dense_scores",
    "detect_format",
    "export_document",
    "export_file",
    "export_notes",
    "import_file",
    "load_document",
    "merge_dense",
    "read_document",
    "store_document",
    "write_document",
]
