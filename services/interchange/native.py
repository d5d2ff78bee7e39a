"""The ``circuitreg`` format: the interchange document's own JSON (``CircuitDocument``)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from circuitreg.schema import FORMAT_VERSION, CircuitDocument

from .base import ImportOptions, validation_message
from .errors import InterchangeError
from .jsonread import as_object, parse_json


def read_circuitreg(data: bytes, options: ImportOptions) -> CircuitDocument:
    """Parse and validate a document; options may not contradict what it says about itself.

    The document names its own model, task and method, which are part of its id: an option
    that disagrees would silently make a different circuit, so it is refused instead.
    """
    root = as_object(parse_json(data), "$")
    try:
        doc = CircuitDocument.model_validate(root)
    except ValidationError as exc:
        location, message = validation_message(exc)
        raise InterchangeError(message, location=f"$.{location}" if location else "$") from None
    actual: dict[str, Any] = {
        "model": doc.model.name,
        "task": doc.task.name,
        "method": doc.method.name,
        "ablation": doc.ablation,
        "metric": doc.metric,
        "seed": doc.seed,
        "checkpoint": doc.model.checkpoint,
    }
    for name, value in options.given().items():
        if actual[name] != value:
            raise InterchangeError(
                f"the document says {name} is {actual[name]!r}, the option says {value!r}; "
                "a circuitreg document carries its own metadata (drop the option)",
                location=f"$.{'model.name' if name == 'model' else name}",
            )
    return doc


def write_circuitreg(doc: CircuitDocument) -> bytes:
    """The document's JSON."""
    return doc.to_json().encode()


def sniff_circuitreg(data: bytes, payload: Any) -> bool:
    """A JSON object whose ``format`` is ``circuitreg/1``."""
    return isinstance(payload, dict) and payload.get("format") == FORMAT_VERSION
