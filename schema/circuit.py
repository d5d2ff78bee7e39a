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
    hook_name: str | None = Field(default=None, description="TransformerLens hook name.")
    score: float | None = Field(default=None, description="Node importance, if scored.")
    in_circuit: bool = True

    @classmethod
    def from_name(
        cls,
        name: str,
        *,
        position: int | None = None,
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
    def key(self) -> tuple[str, int | None]:
        """Identity within a circuit: name and position."""
        return (self.name, self.position)


class Edge(_Frozen):
    """A directed edge from a writer to a reader, with the receiving input of a head."""

    source: str
    target: str
    receiver: Receiver | None = None
    score: float | None = Field(default=None, description="Importance; sign kept.")
    in_circuit: bool = True
    position: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _canonical(self) -> Edge:
        parse_edge(self.name)
        return self

    @property
    def name(self) -> str:
        """Canonical edge name, e.g. ``a0.h1->a1.h2<k>``."""
        return edge_name(self.source, self.target, self.receiver)

    @property
    def key(self) -> tuple[str, int | None]:
        """Identity within a circuit: name and position."""
        return (self.name, self.position)

    @classmethod
    def from_name(
        cls,
        name: str,
        *,
        score: float | None = None,
        in_circuit: bool = True,
        position: int | None = None,
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
    validation: tuple[ValidationResult, ...] = ()
    provenance: Provenance = Field(default_factory=Provenance)

    @field_validator("components")
    @classmethod
    def _unique_components(cls, value: tuple[Component, ...]) -> tuple[Component, ...]:
        seen: set[tuple[str, int | None]] = set()
        for comp in value:
            if comp.key in seen:
                raise ValueError(f"component {comp.name!r} (position {comp.position}) repeated")
            seen.add(comp.key)
        return value

    @model_validator(mode="after")
    def _edges_consistent(self) -> CircuitDocument:
        names = {c.name for c in self.components}
        seen: set[tuple[str, int | None]] = set()
        for e in self.edges:
            if e.key in seen:
                raise ValueError(f"edge {e.name!r} (position {e.position}) repeated")
            seen.add(e.key)
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
        return self

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
        data["components"] = sorted(
            (c.model_dump(mode="json") for c in self.components),
            key=lambda c: (node_order_key(c["name"]), c["position"] or -1),
        )
        data["edges"] = sorted(
            (e.model_dump(mode="json") for e in self.edges),
            key=lambda e: (e["source"], e["target"], e["receiver"] or "", e["position"] or -1),
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


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the interchange document (exported to ``schema/``)."""
    return CircuitDocument.model_json_schema()
