"""Publish the method registry as ``schema/methods.json`` for torch-free readers.

The API container has no torch, so it cannot import the registry; it reads this generated
catalogue instead (to list methods and to refuse an unknown method or parameter before a job
is queued). A test keeps the file equal to the registry, as the GraphQL SDL is kept.
Regenerate with ``python -m circuitreg.workers.methods.catalogue``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from circuitreg.workers.methods.registry import default_registry

CATALOGUE_PATH = Path(__file__).resolve().parents[2] / "schema" / "methods.json"


def catalogue() -> list[dict[str, Any]]:
    """Every registered method with its description and options, JSON-safe, sorted by name."""
    return sorted(default_registry().describe(), key=lambda m: str(m["name"]))


def catalogue_json() -> str:
    """The catalogue as the exact text written to ``schema/methods.json``."""
    return json.dumps(catalogue(), indent=2, sort_keys=True) + "\n"


def write_catalogue(path: Path = CATALOGUE_PATH) -> Path:
    """Write the catalogue file; returns its path."""
    path.write_text(catalogue_json())
    return path


if __name__ == "__main__":
    print(write_catalogue())
