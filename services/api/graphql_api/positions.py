"""Positions in the GraphQL API (issue 18): the position axis type and the position filters.

A positional circuit holds its summed edges (no position) and the positional edges that
refine them; ``positional`` picks either kind, ``position`` (a token index) and ``span`` (a
named position such as END) pick positional entries, and every filter given must hold.
Filters on position or span are answered by the store's positional index
(``GraphStore.edges_at``, ``component_usage``, ``circuits_with_edge``), the others from the
circuit's document, which a circuit's other fields load anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

import strawberry

from circuitreg import schema as cs
from circuitreg.schema.circuit import PositionAxis as AxisModel

from .errors import InputError
from .inputs import check_component, check_text

MAX_POSITION = 1_000_000
T = TypeVar("T", cs.Component, cs.Edge)


@strawberry.type(description="How a positional circuit names its token positions.")
class PositionAxis:
    mode: str = strawberry.field(
        description="index: position t is token t of every prompt; spans: named spans of "
        "each prompt (S1, IO, S2, END), tokens in no span fall in 'other'."
    )
    labels: list[str] = strawberry.field(description="The positions' names, in order.")
    indices: list[int | None] = strawberry.field(
        description="Each label's token index where every prompt has it at the same one."
    )
    tokens: list[str] = strawberry.field(
        description="The first clean prompt's tokens, for drawing the circuit over it."
    )

    @classmethod
    def of(cls, axis: AxisModel) -> PositionAxis:
        return cls(
            mode=axis.mode,
            labels=list(axis.labels),
            indices=list(axis.indices),
            tokens=list(axis.tokens),
        )


@dataclass(frozen=True)
class PositionFilter:
    """Checked position filters of one field (None: any)."""

    position: int | None = None
    span: str | None = None
    positional: bool | None = None
    component: str | None = None

    @property
    def indexed(self) -> bool:
        """Whether the store's positional index answers it (a position or span is given)."""
        return self.position is not None or self.span is not None

    def keep(self, entries: Iterable[T]) -> list[T]:
        """The entries every given filter holds for (``component``: an edge's end or the
        component's name)."""
        return [e for e in entries if self._holds(e)]

    def _holds(self, entry: cs.Component | cs.Edge) -> bool:
        if self.positional is not None and entry.positional != self.positional:
            return False
        if self.position is not None and entry.position != self.position:
            return False
        if self.span is not None and entry.span != self.span:
            return False
        if self.component is None:
            return True
        if isinstance(entry, cs.Edge):
            return self.component in (entry.source, entry.target)
        return entry.name == self.component


def position_filter(
    position: int | None,
    span: str | None,
    positional: bool | None = None,
    component: str | None = None,
) -> PositionFilter:
    """Check the filter arguments, naming the one that is wrong; a position or span with
    ``positional: false`` can match nothing and is refused as a contradiction."""
    if position is not None and not 0 <= position <= MAX_POSITION:
        raise InputError("position", f"must be between 0 and {MAX_POSITION}, got {position}")
    span_ = check_text("span", span)
    if span is not None and not span_:
        raise InputError("span", "must not be empty")
    if positional is False and (position is not None or span is not None):
        raise InputError("positional", "false selects summed entries, which have no position")
    if component is not None:
        check_component("component", component)
    return PositionFilter(position, span_, positional, component)


def position_key(position: int | None, span: str | None) -> str:
    """The position part of a pagination key: unpositioned first, then by index, then span;
    unchanged (no span part) for entries without a span, so older cursors still resolve."""
    key = f"{0 if position is None else position + 1:07d}"
    return key if span is None else f"{key}@{span}"
