"""Positions in the interchange formats (issue 18): which formats keep them, and the summed
view that the formats without positions export, with a note saying what was left out.

``circuitreg`` (the document's JSON) and ``graphml`` keep every positional entry and the
position axis; ``dot`` draws positional nodes as ``name@position`` / ``name@span``. MIB,
ACDC and auto-circuit files have no token positions, so they get the circuit summed over
positions: a document with a position axis already holds every summed edge, and its
positional entries (which refine them) are left out; a document without an axis whose
edges carry positions (an import) has them summed per edge, which is what its stored graph
means too (``stores.common.on_axis``). ``export_notes`` tells the caller either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from circuitreg.schema import CircuitDocument, Component, Edge

POSITIONLESS_FORMATS = ("mib", "acdc", "auto-circuit")
T = TypeVar("T", Component, Edge)


@dataclass(frozen=True)
class SummedView:
    """A document's components and edges over all positions, and what summing dropped."""

    components: tuple[Component, ...]
    edges: tuple[Edge, ...]
    dropped_edges: int = 0
    dropped_components: int = 0
    summed_edges: int = 0

    def note(self, fmt: str) -> str | None:
        """What the export in ``fmt`` leaves out, or None when nothing was positional."""
        if self.dropped_edges or self.dropped_components:
            return (
                f"{fmt} has no token positions: the export holds the circuit's "
                f"{len(self.edges)} summed edges; its {self.dropped_edges} positional edges "
                f"and {self.dropped_components} positional components are left out "
                "(the circuitreg and graphml formats keep them)"
            )
        if self.summed_edges:
            return (
                f"{fmt} has no token positions: {self.summed_edges} edges given at token "
                "positions are exported summed over their positions"
            )
        return None


def summed_view(doc: CircuitDocument) -> SummedView:
    """The document over all positions (see the module docstring)."""
    if doc.positions is not None:
        return SummedView(
            components=tuple(c for c in doc.components if not c.positional),
            edges=tuple(e for e in doc.edges if not e.positional),
            dropped_edges=sum(1 for e in doc.edges if e.positional),
            dropped_components=sum(1 for c in doc.components if c.positional),
        )
    if not any(e.positional for e in doc.edges) and not any(c.positional for c in doc.components):
        return SummedView(doc.components, doc.edges)
    return SummedView(
        components=_merge(doc.components, lambda c: c.name),
        edges=_merge(doc.edges, lambda e: e.name),
        summed_edges=sum(1 for e in doc.edges if e.positional),
    )


def _merge(entries: Sequence[T], name_of: Callable[[T], str]) -> tuple[T, ...]:
    """One entry per name, in first-seen order: scores summed (unknown if any is unknown,
    exactly rounded), in the circuit if any position is, no position."""
    groups: dict[str, list[T]] = {}
    for entry in entries:
        groups.setdefault(name_of(entry), []).append(entry)
    out = []
    for members in groups.values():
        scores = [m.score for m in members]
        score = None if any(s is None for s in scores) else math.fsum(s for s in scores if s)
        out.append(
            members[0].model_copy(
                update={
                    "position": None,
                    "span": None,
                    "score": score,
                    "in_circuit": any(m.in_circuit for m in members),
                }
            )
        )
    return tuple(out)


def export_notes(doc: CircuitDocument, fmt: str) -> tuple[str, ...]:
    """What exporting ``doc`` in ``fmt`` leaves out of it (empty when nothing)."""
    if fmt not in POSITIONLESS_FORMATS:
        return ()
    note = summed_view(doc).note(fmt)
    return () if note is None else (note,)
