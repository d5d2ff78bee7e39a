"""GraphQL input types and their conversion to store/queue values, with field-named errors.

Every conversion goes through pydantic or the canonical-name parser, and any failure is an
``InputError`` whose message starts with the argument path (``filter.minFaithfulness``), so a
client sees which field to fix. Nothing is written before all inputs have been converted.
"""

from __future__ import annotations

import math

import strawberry
from pydantic import ValidationError
from strawberry.scalars import JSON

from circuitreg.schema import CanonicalNameError, parse_edge, parse_node
from circuitreg.services.stores import types as st

from .errors import InputError
from .scalars import ComponentKind, Receiver

MAX_TEXT = 500


def check_text(field: str, value: str | None, *, required: bool = False) -> str | None:
    """A trimmed, bounded string; empty is refused when ``required``."""
    if value is None:
        if required:
            raise InputError(field, "is required")
        return None
    value = value.strip()
    if required and not value:
        raise InputError(field, "must not be empty")
    if len(value) > MAX_TEXT:
        raise InputError(field, f"longer than {MAX_TEXT} characters")
    return value


def check_finite(field: str, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise InputError(field, f"must be a finite number, got {value}")
    return value


def check_component(field: str, name: str) -> str:
    """A canonical component name (``a1.h2``, ``m0``, ``input``, ``logits``)."""
    try:
        parse_node(name)
    except CanonicalNameError as exc:
        raise InputError(field, str(exc)) from None
    return name


def check_edge(field: str, name: str) -> str:
    """A canonical edge name (``a0.h1->a1.h2<k>``)."""
    try:
        parse_edge(name)
    except CanonicalNameError as exc:
        raise InputError(field, str(exc)) from None
    return name


def pydantic_error(prefix: str, exc: ValidationError) -> InputError:
    """The first pydantic error as an InputError naming the (camelCase) field."""
    err = exc.errors()[0]
    loc = ".".join(_camel(str(p)) for p in err["loc"])
    return InputError(f"{prefix}.{loc}" if loc else prefix, err["msg"])


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@strawberry.input(description="Conjunctive filter on circuits; omitted fields match anything.")
class CircuitFilterInput:
    model: str | None = None
    checkpoint: str | None = None
    task: str | None = None
    method: str | None = None
    tag: str | None = None
    alias: str | None = None
    min_faithfulness: float | None = None
    max_faithfulness: float | None = None
    min_edges: int | None = None
    max_edges: int | None = None

    def to_store(self, field: str = "filter") -> st.CircuitFilter:
        values = {
            "model": check_text(f"{field}.model", self.model),
            "checkpoint": check_text(f"{field}.checkpoint", self.checkpoint),
            "task": check_text(f"{field}.task", self.task),
            "method": check_text(f"{field}.method", self.method),
            "tag": check_text(f"{field}.tag", self.tag),
            "alias": check_text(f"{field}.alias", self.alias),
            "min_faithfulness": check_finite(f"{field}.minFaithfulness", self.min_faithfulness),
            "max_faithfulness": check_finite(f"{field}.maxFaithfulness", self.max_faithfulness),
            "min_edges": self.min_edges,
            "max_edges": self.max_edges,
        }
        for name in ("min_edges", "max_edges"):
            count = values[name]
            if isinstance(count, int) and count < 0:
                raise InputError(f"{field}.{_camel(name)}", f"must be >= 0, got {count}")
        for low, high in (("min_faithfulness", "max_faithfulness"), ("min_edges", "max_edges")):
            lo, hi = values[low], values[high]
            if lo is not None and hi is not None and lo > hi:  # type: ignore[operator]
                raise InputError(f"{field}.{_camel(low)}", f"{lo} is above {_camel(high)} {hi}")
        return st.CircuitFilter(**values)  # type: ignore[arg-type]


@strawberry.input(description="Constraints on one motif node; every given field must match.")
class NodePatternInput:
    variable: str
    name: str | None = None
    kind: ComponentKind | None = None
    layer: int | None = None
    label: str | None = None


@strawberry.input(description="A motif edge between two variables, optionally into q, k or v.")
class MotifEdgeInput:
    source: str
    target: str
    receiver: Receiver | None = None


@strawberry.input(description="A small pattern, e.g. previous-token head -> induction head <k>.")
class MotifInput:
    nodes: list[NodePatternInput]
    edges: list[MotifEdgeInput]
    model: str | None = None

    def to_store(self, field: str = "motif") -> st.Motif:
        if not 1 <= len(self.nodes) <= 8:
            raise InputError(f"{field}.nodes", "needs between 1 and 8 nodes")
        if len(self.edges) > 16:
            raise InputError(f"{field}.edges", "at most 16 edges")
        nodes: dict[str, st.NodePattern] = {}
        for i, node in enumerate(self.nodes):
            path = f"{field}.nodes[{i}]"
            var = check_text(f"{path}.variable", node.variable, required=True)
            assert var is not None
            if var in nodes:
                raise InputError(f"{path}.variable", f"{var!r} is used twice")
            if node.name is not None:
                check_component(f"{path}.name", node.name)
            if node.layer is not None and node.layer < 0:
                raise InputError(f"{path}.layer", f"must be >= 0, got {node.layer}")
            nodes[var] = st.NodePattern(
                name=node.name,
                kind=node.kind,
                layer=node.layer,
                label=check_text(f"{path}.label", node.label),
            )
        edges = []
        for i, edge in enumerate(self.edges):
            for end, value in (("source", edge.source), ("target", edge.target)):
                if value not in nodes:
                    raise InputError(
                        f"{field}.edges[{i}].{end}", f"{value!r} is not a variable of the motif"
                    )
            edges.append(
                st.MotifEdge(source=edge.source, target=edge.target, receiver=edge.receiver)
            )
        return st.Motif(
            nodes=nodes, edges=tuple(edges), model=check_text(f"{field}.model", self.model)
        )


@strawberry.input(description="A discovery job: find a circuit of a model for a task.")
class DiscoveryInput:
    model: str
    task: str
    method: str
    params: JSON | None = None
    model_revision: str | None = None
    ablation: str = "resample"
    metric: str = "logit_diff"
    priority: int = 0


@strawberry.input(description="A validation job: measure a stored circuit's faithfulness.")
class ValidationInput:
    circuit: str = strawberry.field(description="Circuit id or alias.")
    model: str
    task: str
    ablation: str = "resample"
    metric: str = "logit_diff"
    params: JSON | None = None
    priority: int = 0
