"""The typed circuit graph shared by workers, stores and the API.

A ``CircuitDocument`` is the interchange document (its JSON Schema is exported to
``schema/circuit.schema.json``). It is immutable: its id is the SHA-256 of its content
(model, checkpoint, task, method, ablation, metric, seed, components and edges), so re-running
the same job yields the same id and a store can write it idempotently. Validation results,
tags and aliases are attached later and are not part of the id.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .names import (
    ComponentKind,
    Receiver,
    edge_name,
    hook_name,
    node_order_key,
    parse_edge,
    parse_node,
)

FORMAT_VERSION: Literal["circuitreg/1"] = "circuitreg/1"
AblationKind = Literal["resample", "zero", "mean"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Component(_Frozen):
    """A node of the computational graph: embedding, head, MLP, logits or feature."""

    name: str = Field(description="Canonical name: input, a{L}.h{H}, m{L}, logits.")
    kind: ComponentKind
    layer: int | None = Field(default=None, ge=0)
    head: int | None = Field(default=None, ge=0)
    position: int | None = Field(default=None, ge=0, description="Token position, if any.")
    span: str | None = Field(
        default=None, min_length=1, description="Named position (a task span such as S2), if any."
    )
    hook_name: str | None = Field(default=None, description="TransformerLens hook name.")
    score: float | None = Field(default=None, description="Node importance, if scored.")
    in_circuit: bool = True

    @classmethod
    def from_name(
        cls,
        name: str,
        *,
        position: int | None = None,
        span: str | None = None,
        score: float | None = None,
        in_circuit: bool = True,
    ) -> Component:
        """Build a component from its canonical name, filling kind, layer, head and hook."""
        parsed = parse_node(name)
        return cls(
            name=name,
            kind=parsed.kind,
            layer=parsed.layer,
            head=parsed.head,
            position=position,
            span=span,
            hook_name=hook_name(name),
            score=score,
            in_circuit=in_circuit,
        )

    @model_validator(mode="after")
    def _name_matches_fields(self) -> Component:
        parsed = parse_node(self.name)
        if (parsed.kind, parsed.layer, parsed.head) != (self.kind, self.layer, self.head):
            raise ValueError(
                f"component {self.name!r}: kind/layer/head {self.kind}/{self.layer}/{self.head}"
                f" disagree with its name ({parsed.kind}/{parsed.layer}/{parsed.head})"
            )
        return self

    @property
    def key(self) -> tuple[str, int | None, str | None]:
        """Identity within a circuit: name, position and span."""
        return (self.name, self.position, self.span)

    @property
    def positional(self) -> bool:
        """Whether this is a node at one position (or span) rather than over all of them."""
        return self.position is not None or self.span is not None


class Edge(_Frozen):
    """A directed edge from a writer to a reader, with the receiving input of a head."""

    source: str
    target: str
    receiver: Receiver | None = None
    score: float | None = Field(default=None, description="Importance; sign kept.")
    in_circuit: bool = True
    position: int | None = Field(
        default=None, ge=0, description="Token index of a positional edge (writer and reader)."
    )
    span: str | None = Field(
        default=None, min_length=1, description="Named position of a positional edge, e.g. END."
    )

    @model_validator(mode="after")
    def _canonical(self) -> Edge:
        parse_edge(self.name)
        return self

    @property
    def name(self) -> str:
        """Canonical edge name, e.g. ``a0.h1->a1.h2<k>``."""
        return edge_name(self.source, self.target, self.receiver)

    @property
    def key(self) -> tuple[str, int | None, str | None]:
        """Identity within a circuit: name, position and span."""
        return (self.name, self.position, self.span)

    @property
    def positional(self) -> bool:
        """Whether this edge is at one position (or span) rather than summed over them."""
        return self.position is not None or self.span is not None

    @classmethod
    def from_name(
        cls,
        name: str,
        *,
        score: float | None = None,
        in_circuit: bool = True,
        position: int | None = None,
        span: str | None = None,
    ) -> Edge:
        """Build an edge from its canonical name."""
        parsed = parse_edge(name)
        return cls(
            source=parsed.source,
            target=parsed.target,
            receiver=parsed.receiver,
            score=score,
            in_circuit=in_circuit,
            position=position,
            span=span,
        )


class PositionAxis(_Frozen):
    """How a positional circuit names its positions (issue 18; PEAP's "dataset schema").

    ``index``: position ``t`` is token ``t`` of every prompt (labels ``"0".."T-1"``).
    ``spans``: positions are named spans of each prompt (IOI's S1, IO, S2, END), so prompts
    of different lengths align by span; tokens in no named span fall in ``other``, so the
    positional scores still sum to the unpositioned ones. ``indices`` gives each label's
    token index where every prompt has it at the same one, else None. ``tokens`` is the
    first clean prompt, for drawing the circuit over it.
    """

    mode: Literal["index", "spans"]
    labels: tuple[str, ...] = Field(min_length=1)
    indices: tuple[int | None, ...]
    tokens: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _aligned(self) -> PositionAxis:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"position labels repeat: {list(self.labels)}")
        if len(self.indices) != len(self.labels):
            raise ValueError(f"{len(self.indices)} position indices for {len(self.labels)} labels")
        if self.mode == "index" and self.labels != tuple(str(i) for i in range(len(self.labels))):
            raise ValueError("index positions are labelled 0..T-1 in order")
        return self

    def check(self, what: str, position: int | None, span: str | None) -> None:
        """Raise ``ValueError`` unless ``position``/``span`` name a position of this axis."""
        if self.mode == "spans":
            if span is None or span not in self.labels:
                raise ValueError(f"{what}: span {span!r} is not one of {list(self.labels)}")
            expected = self.indices[self.labels.index(span)]
            if position is not None and position != expected:
                raise ValueError(f"{what}: span {span!r} is at index {expected}, not {position}")
        elif span is not None or position is None or position >= len(self.labels):
            raise ValueError(
                f"{what}: index positions need a position in 0..{len(self.labels) - 1} and no span"
            )


class ModelRef(_Frozen):
    """Which model (and checkpoint) a circuit was found in."""

    name: str = Field(min_length=1)
    architecture: str = "unknown"
    checkpoint: str | None = Field(default=None, description="Checkpoint label, e.g. step-800.")
    step: int | None = Field(default=None, ge=0, description="Training step, for ordering.")
    revision: str | None = Field(default=None, description="Weights hash or hub revision.")
    n_layers: int = Field(ge=1)
    n_heads: int = Field(ge=1)
    d_model: int | None = Field(default=None, ge=1)
    parallel_attn_mlp: bool = False
    attn_only: bool = False


class TaskRef(_Frozen):
    """The task and the corruption that decide what a method can see."""

    name: str = Field(min_length=1)
    spec: dict[str, Any] = Field(default_factory=dict)
    corruption: str | None = Field(default=None, description="How corrupted prompts were made.")
    dataset_hash: str | None = None
    n_examples: int | None = Field(default=None, ge=0)


class MethodRef(_Frozen):
    """A discovery method and its full parameters."""

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class Provenance(_Frozen):
    """Where a circuit came from; not part of its content id."""

    code_version: str | None = None
    transformer_lens_version: str | None = None
    torch_version: str | None = None
    device: str | None = None
    job_id: str | None = None
    source_format: str | None = Field(default=None, description="Importer used, if imported.")
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    extra: dict[str, Any] = Field(default_factory=dict)


class ValidationResult(_Frozen):
    """One validation measurement of a circuit under one ablation and metric."""

    name: str = Field(min_length=1, description="faithfulness, curve, controls, ...")
    ablation: str
    metric: str
    corruption: str | None = None
    values: dict[str, Any] = Field(default_factory=dict)
    passed: bool | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class ConsistencyReport(_Frozen):
    """How alike two circuits are, and by which alignment they were compared."""

    alignment: Literal["canonical", "relative_depth", "roles"]
    edge_jaccard: float
    node_jaccard: float
    weighted_overlap: float
    rank_correlation: float | None
    shared_edges: int
    canonical_cosine: float = Field(
        description="Cosine of the canonical mechanism embeddings (edge importances)."
    )
    role_aligned_cosine: float = Field(
        description="Cosine of the role-aligned embeddings (labelled heads by their roles)."
    )
    performance_a: float | None = None
    performance_b: float | None = None
    performance_agrees: bool | None = None
    tolerance: float | None = None
    note: str = ""


class CircuitDocument(_Frozen):
    """The interchange document: one circuit with all its scored nodes and edges."""

    format: Literal["circuitreg/1"] = FORMAT_VERSION
    model: ModelRef
    task: TaskRef
    method: MethodRef
    ablation: str = "resample"
    metric: str = "logit_diff"
    seed: int | None = None
    components: tuple[Component, ...]
    edges: tuple[Edge, ...]
    labels: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="Role labels by component name."
    )
    positions: PositionAxis | None = Field(
        default=None,
        description="The position axis of a positional circuit: its edges then hold every "
        "summed edge (no position) plus the positional edges kept (position and/or span).",
    )
    validation: tuple[ValidationResult, ...] = ()
    provenance: Provenance = Field(default_factory=Provenance)

    @field_validator("components")
    @classmethod
    def _unique_components(cls, value: tuple[Component, ...]) -> tuple[Component, ...]:
        seen: set[tuple[str, int | None, str | None]] = set()
        for comp in value:
            if comp.key in seen:
                raise ValueError(
                    f"component {comp.name!r} (position {comp.position}, span {comp.span}) repeated"
                )
            seen.add(comp.key)
        return value

    @model_validator(mode="after")
    def _edges_consistent(self) -> CircuitDocument:
        names = {c.name for c in self.components}
        seen: set[tuple[str, int | None, str | None]] = set()
        for e in self.edges:
            if e.key in seen:
                raise ValueError(f"edge {e.name!r} (position {e.position}, span {e.span}) repeated")
            seen.add(e.key)
            self._check_position(f"edge {e.name!r}", e.position, e.span)
            for end in (e.source, e.target):
                if end not in names:
                    raise ValueError(f"edge {e.name!r} names component {end!r} not in components")
            for end in (e.source, e.target):
                parsed = parse_node(end)
                if parsed.layer is not None and parsed.layer >= self.model.n_layers:
                    raise ValueError(
                        f"edge {e.name!r}: layer {parsed.layer} >= n_layers {self.model.n_layers}"
                    )
                if parsed.head is not None and parsed.head >= self.model.n_heads:
                    raise ValueError(
                        f"edge {e.name!r}: head {parsed.head} >= n_heads {self.model.n_heads}"
                    )
            if node_order_key(e.source) >= node_order_key(e.target):
                raise ValueError(f"edge {e.name!r} does not go forward through the model")
        for name in self.labels:
            if name not in names:
                raise ValueError(f"label for {name!r}, which is not a component")
        for c in self.components:
            self._check_position(f"component {c.name!r}", c.position, c.span)
        return self

    def _check_position(self, what: str, position: int | None, span: str | None) -> None:
        """Positional entries need the document's axis, and must name one of its positions;
        a document with no axis keeps the positions it was given (imported formats)."""
        if self.positions is None:
            if span is not None:
                raise ValueError(f"{what}: span {span!r} but the circuit has no position axis")
            return
        if position is not None or span is not None:
            self.positions.check(what, position, span)

    def content(self) -> dict[str, Any]:
        """The fields that identify the circuit (no validation, labels or provenance)."""
        data = self.model_dump(
            mode="json",
            include={
                "format",
                "model",
                "task",
                "method",
                "ablation",
                "metric",
                "seed",
            },
        )
        if self.positions is not None:  # absent otherwise, so earlier ids do not change
            data["positions"] = self.positions.model_dump(mode="json")
        data["components"] = sorted(
            (_without_empty_span(c.model_dump(mode="json")) for c in self.components),
            key=lambda c: (node_order_key(c["name"]), _position_order(c)),
        )
        data["edges"] = sorted(
            (_without_empty_span(e.model_dump(mode="json")) for e in self.edges),
            key=lambda e: (e["source"], e["target"], e["receiver"] or "", _position_order(e)),
        )
        return data

    @property
    def id(self) -> str:
        """Content hash: ``c_`` and the first 32 hex digits of SHA-256 of canonical JSON."""
        blob = json.dumps(self.content(), sort_keys=True, separators=(",", ":"))
        return "c_" + hashlib.sha256(blob.encode()).hexdigest()[:32]

    def circuit_edges(self) -> tuple[Edge, ...]:
        """Only the edges in the circuit."""
        return tuple(e for e in self.edges if e.in_circuit)

    def circuit_components(self) -> tuple[Component, ...]:
        """Only the components in the circuit."""
        return tuple(c for c in self.components if c.in_circuit)

    def with_validation(self, *results: ValidationResult) -> CircuitDocument:
        """A copy with more validation results (the id does not change)."""
        return self.model_copy(update={"validation": (*self.validation, *results)})

    def to_json(self) -> str:
        """Serialise to the interchange JSON."""
        return self.model_dump_json(indent=None)

    @classmethod
    def from_json(cls, text: str | bytes) -> CircuitDocument:
        """Parse and validate the interchange JSON."""
        return cls.model_validate_json(text)


def _without_empty_span(entry: dict[str, Any]) -> dict[str, Any]:
    """Drop an unset span, so documents from before spans existed keep their ids."""
    if entry.get("span") is None:
        entry.pop("span", None)
    return entry


def _position_order(entry: dict[str, Any]) -> tuple[int, str]:
    """Sort key of an entry's position (``or -1`` as ids have always been computed, so a
    position-0 entry sorts with the unpositioned ones), then its span."""
    return (entry.get("position") or -1, entry.get("span") or "")


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the interchange document (exported to ``schema/``)."""
    return CircuitDocument.model_json_schema()
