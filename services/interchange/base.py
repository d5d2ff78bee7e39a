"""What every importer shares: the caller's metadata options and a safe document builder.

Most formats carry only a graph: the model, task and method that produced it are not in the
file, yet they are part of a circuit's content id. The caller supplies them as
``ImportOptions``; anything left unset takes the format's default (``"unknown"`` unless the
format itself names it), so the same file imported with the same options has the same id.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from circuitreg.schema import (
    CircuitDocument,
    Component,
    Edge,
    MethodRef,
    ModelRef,
    Provenance,
    TaskRef,
    node_order_key,
)

from .errors import InterchangeError

UNKNOWN = "unknown"
# The stores keep layers, heads, positions, steps and seeds in INTEGER columns, which are
# 32-bit in PostgreSQL: a larger value would import and then fail in the store's write.
MAX_STORED_INT = 2**31 - 1


@dataclass(frozen=True)
class ImportOptions:
    """Metadata a file lacks, and the few choices an importer needs; ``None`` means default."""

    model: str | None = None
    task: str | None = None
    method: str | None = None
    ablation: str | None = None
    metric: str | None = None
    seed: int | None = None
    checkpoint: str | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    top_k: int | None = None
    aggregate: bool = False
    method_params: dict[str, Any] = field(default_factory=dict)

    def specific(self) -> set[str]:
        """The format-specific options the caller set (each applies to some formats only)."""
        chosen = {"n_layers": self.n_layers, "n_heads": self.n_heads, "top_k": self.top_k}
        names = {name for name, value in chosen.items() if value is not None}
        return names | ({"aggregate"} if self.aggregate else set())

    def given(self) -> dict[str, Any]:
        """The metadata options the caller actually set (for formats that carry their own)."""
        names = ("model", "task", "method", "ablation", "metric", "seed", "checkpoint")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


def validation_message(exc: ValidationError) -> tuple[str, str]:
    """The location (``edges[3].score``) and message of a pydantic error's first problem."""
    first = exc.errors()[0]
    parts: list[str] = []
    for item in first["loc"]:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(f".{item}" if parts else str(item))
    location = "".join(parts)
    message = first["msg"].removeprefix("Value error, ")
    more = len(exc.errors()) - 1
    if more:
        message += f" (and {more} more problem{'s' if more > 1 else ''})"
    return location, message


def error_text(exc: Exception) -> str:
    """One line for an exception raised while building a schema object."""
    if isinstance(exc, ValidationError):
        return validation_message(exc)[1]
    return str(exc).splitlines()[0]


def build_document(
    *,
    options: ImportOptions,
    format_name: str,
    model_defaults: dict[str, Any],
    components: Iterable[Component],
    edges: Iterable[Edge],
    default_method: str = UNKNOWN,
    default_model: str = UNKNOWN,
    extra: dict[str, Any] | None = None,
) -> CircuitDocument:
    """Assemble and validate a document; schema violations become ``InterchangeError``."""
    try:
        model = ModelRef(
            name=options.model or default_model,
            checkpoint=options.checkpoint,
            **model_defaults,
        )
        return CircuitDocument(
            model=model,
            task=TaskRef(name=options.task or UNKNOWN),
            method=MethodRef(name=options.method or default_method, params=options.method_params),
            ablation=options.ablation or "resample",
            metric=options.metric or "logit_diff",
            seed=options.seed,
            components=tuple(components),
            edges=tuple(edges),
            provenance=Provenance(source_format=format_name, extra=extra or {}),
        )
    except ValidationError as exc:
        location, message = validation_message(exc)
        raise InterchangeError(message, location=f"document {location}".strip()) from None


def sorted_component_names(names: Iterable[str]) -> list[str]:
    """Canonical node names in model order: input, per layer heads then MLP, logits."""
    return sorted(set(names), key=node_order_key)


def dense_key(edge: Edge) -> str:
    """An edge's key in dense score files: its name, with ``@position`` when positioned and
    ``@span`` after that at a span (``a1.h2->logits@@END``, ``a0.h1->a1.h2<k>@4@S2``)."""
    if edge.span is not None:
        return f"{edge.name}@{'' if edge.position is None else edge.position}@{edge.span}"
    return edge.name if edge.position is None else f"{edge.name}@{edge.position}"


def parse_dense_key(key: str) -> tuple[str, int | None, str | None]:
    """(edge name, position, span) of a ``dense_key``."""
    name, _, rest = key.partition("@")
    position, _, span = rest.partition("@")
    return name, int(position) if position else None, span or None


def _int_text(value: int) -> str:
    return str(value) if value.bit_length() < 64 else f"an integer of {value.bit_length()} bits"


def check_storable(doc: CircuitDocument) -> None:
    """Refuse what the stores cannot hold: integers beyond 32 bits, scores that are not finite.

    Every importer's document passes through here (``Format.read``), so the refusal is an
    ``InterchangeError`` naming the field, raised before anything is written.
    """
    model = doc.model
    ints: list[tuple[str, int | None]] = [
        ("model.n_layers", model.n_layers),
        ("model.n_heads", model.n_heads),
        ("model.d_model", model.d_model),
        ("model.step", model.step),
        ("task.n_examples", doc.task.n_examples),
        ("seed", doc.seed),
    ]
    scores: list[tuple[str, float | None]] = []
    for i, comp in enumerate(doc.components):
        where = f"components[{i}] ({comp.name!r})"
        ints += [(f"{where}.layer", comp.layer), (f"{where}.head", comp.head)]
        ints.append((f"{where}.position", comp.position))
        scores.append((f"{where}.score", comp.score))
    for i, edge in enumerate(doc.edges):
        where = f"edges[{i}] ({edge.name!r})"
        ints.append((f"{where}.position", edge.position))
        scores.append((f"{where}.score", edge.score))
    for where, value in ints:
        if value is not None and not -MAX_STORED_INT - 1 <= value <= MAX_STORED_INT:
            raise InterchangeError(
                f"{_int_text(value)} is out of the range the registry stores "
                f"(at most {MAX_STORED_INT})",
                location=f"document {where}",
            )
    for where, score in scores:
        if score is not None and not math.isfinite(score):
            raise InterchangeError(
                f"expected a finite number, got {score!r}", location=f"document {where}"
            )
