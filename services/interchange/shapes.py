"""The model shape (layers, heads) for formats that do not state it.

``ModelRef`` needs ``n_layers`` and ``n_heads`` and both enter the circuit id. When a file
does not say, the caller's options win; otherwise the smallest shape that holds every
component is used, and the provenance records which values were inferred.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from circuitreg.schema import Component

from .base import ImportOptions
from .errors import InterchangeError


def infer_shape(
    components: Iterable[Component], options: ImportOptions, *, location: str
) -> dict[str, Any]:
    """``n_layers``/``n_heads`` from options, else from the largest layer and head seen."""
    layers = [c.layer for c in components if c.layer is not None]
    heads = [c.head for c in components if c.head is not None]
    n_layers = options.n_layers if options.n_layers is not None else max(layers, default=0) + 1
    n_heads = options.n_heads if options.n_heads is not None else max(heads, default=0) + 1
    if layers and max(layers) >= n_layers:
        raise InterchangeError(
            f"a component is in layer {max(layers)} but n_layers is {n_layers}", location=location
        )
    if heads and max(heads) >= n_heads:
        raise InterchangeError(
            f"a component is head {max(heads)} but n_heads is {n_heads}", location=location
        )
    return {"n_layers": n_layers, "n_heads": n_heads}


def inferred_note(options: ImportOptions) -> dict[str, Any]:
    """Provenance ``extra`` naming the shape values that were inferred, not given."""
    inferred = [k for k in ("n_layers", "n_heads") if getattr(options, k) is None]
    return {"inferred_shape": inferred} if inferred else {}
