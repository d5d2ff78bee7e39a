"""Importers and exporters between ``CircuitDocument`` and the formats researchers use.

Torch-free (the API container imports it). Formats: ``circuitreg``, ``mib`` (MIB /
EAP-IG), ``neuronpedia`` (circuit-tracer attribution graphs), ``acdc``, ``auto-circuit``,
``graphml`` and ``dot`` (export only). Every importer refuses malformed input with an
``InterchangeError`` that says where (JSON path, line and column, key) and what; nothing is
returned, let alone stored, from a file that fails.

    doc = read_document(data, options=ImportOptions(model="gpt2", task="ioi"))  # detected
    data = write_document(doc, "mib")
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from circuitreg.schema import CircuitDocument

from .base import ImportOptions
from .detect import detect_format, read_source
from .errors import InterchangeError, UnknownFormatError, UnrepresentableError
from .formats import FORMATS, default_registry
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


def import_file(
    path: str | Path, format: str | None = None, options: ImportOptions | None = None
) -> CircuitDocument:
    """Read a file (format detected from its content when None)."""
    return read_document(read_source(path), format, options)


def export_file(doc: CircuitDocument, format: str, path: str | Path) -> None:
    """Write ``doc`` to ``path`` atomically (temporary file, then rename)."""
    data = write_document(doc, format)
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


__all__ = [
    "FORMATS",
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
    "export_file",
    "import_file",
    "load_document",
    "merge_dense",
    "read_document",
    "store_document",
    "write_document",
]
