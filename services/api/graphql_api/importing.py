"""Importing and exporting circuit documents through the interchange formats.

GraphQL's ``importCircuit`` and REST's ``POST /circuits`` share ``import_document``: the
whole file is parsed and validated before anything is written, and the interchange
package's ``store_document`` writes the circuit and its dense scores all or nothing.
Downloads read back through ``load_document``, which merges the dense scores in again, so
formats that list every edge (MIB) export the full graph.
"""

from __future__ import annotations

from typing import Any

from circuitreg.schema import CircuitDocument
from circuitreg.services.interchange.base import ImportOptions
from circuitreg.services.interchange.detect import detect_format
from circuitreg.services.interchange.errors import InterchangeError, UnknownFormatError
from circuitreg.services.interchange.formats import FORMATS
from circuitreg.services.interchange.positions import export_notes
from circuitreg.services.interchange.stored import store_document

from ..services import ApiServices
from .errors import InputError


def _read(data: bytes, fmt: str | None, options: dict[str, Any]) -> CircuitDocument:
    try:
        name = fmt if fmt is not None else detect_format(data)
        target = FORMATS.get(name)
    except UnknownFormatError as exc:
        raise InputError("format", str(exc)) from None
    except InterchangeError as exc:  # the data could not even be decoded to detect it
        raise InputError("content", str(exc)) from None
    try:
        return target.read(data, ImportOptions(**options))
    except InterchangeError as exc:
        raise InputError("content", str(exc)) from None


async def import_document(
    services: ApiServices, data: bytes, fmt: str | None, options: dict[str, Any]
) -> str:
    """Parse ``data`` (format ``fmt`` or detected) and store it; returns the circuit id."""
    given = {k: v for k, v in options.items() if v is not None}
    doc = await services.call(_read, data, fmt, given)
    # The graph store keeps the circuit's edges; scores of edges outside it go to the
    # artifact store (removed again if the circuit cannot be stored).
    stored = await services.call(store_document, services.store, services.artifacts, doc)
    return stored.circuit_id


def exportable_formats() -> list[str]:
    """Names of the formats a circuit can be downloaded in."""
    return FORMATS.writable()


def export_document(doc: CircuitDocument, fmt: str) -> tuple[bytes, str, str, tuple[str, ...]]:
    """Serialise ``doc`` as ``fmt``: the bytes, the media type, the file extension and the
    notes on what the format leaves out (a positional circuit's positions, in MIB)."""
    target = FORMATS.get(fmt)
    return (
        target.write(doc),
        target.media_type,
        target.extension.lstrip("."),
        export_notes(doc, fmt),
    )
