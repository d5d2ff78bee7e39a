"""The exported JSON Schema of the interchange document, ``schema/circuit.schema.json``.

Other tools (and other languages) validate circuitreg documents against this file, so it
is generated from the pydantic models rather than written by hand, and a test fails when
the file and the code drift apart: regenerate with ``circuitreg json-schema --write``.
"""

from __future__ import annotations

import json
from pathlib import Path

import circuitreg.schema
from circuitreg.schema import json_schema

SCHEMA_PATH = Path(circuitreg.schema.__file__).resolve().parent / "circuit.schema.json"


def render_json_schema() -> str:
    """The schema file's exact text: indented JSON with a trailing newline."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **json_schema(),
    }
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_json_schema(path: Path = SCHEMA_PATH) -> Path:
    """Regenerate the schema file; returns its path."""
    path.write_text(render_json_schema(), encoding="utf-8")
    return path
