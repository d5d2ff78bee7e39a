"""The contract every discovery method keeps, and the conversion of its scores to a circuit.

A method is a plain function (auto-circuit style)::

    def method(model, task, graph, config, progress=None) -> ScoreResult

``config`` is a frozen pydantic model subclassing ``MethodConfig``: it carries the method's name
(``method_name``), serialises with ``to_dict`` / ``from_dict`` (so the worker can queue it and
the API can list its options), and always includes the ablation and the metric, because those
decide what a circuit means. ``progress(fraction, message)`` is called as work advances.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Protocol, Self, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator

from circuitreg.schema.circuit import (
    CircuitDocument,
    Component,
    Edge,
    MethodRef,
    ModelRef,
    Provenance,
    TaskRef,
)
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.positional_document import (
    position_axis,
    positional_entries,
    positional_mask,
)
from circuitreg.workers.methods.selection import Selection, explain_selection
from circuitreg.workers.metrics import MetricFn, metric_name
from circuitreg.workers.positions import PositionMap
from circuitreg.workers.tasks.base import TaskData

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

AblationName = Literal["resample", "zero", "mean"]
MetricChoice = Annotated[str | MetricFn, WithJsonSchema({"type": "string"})]
"""A metric name (``logit_diff``, ``prob``, ``kl``, ``cosine``) or, from Python, a function."""
ProgressFn = Callable[[float, str], None]
C = TypeVar("C", bound="MethodConfig")


class ConfigError(ValueError):
    """A method parameter that is unknown or has a bad value."""


class MethodConfig(BaseModel):
    """Options shared by every method. Subclasses add their own and set ``method_name``.

    A frozen pydantic model: pydantic converts and checks each field from its annotation
    (Literal choices, bounds, CLI strings such as ``steps=5``), and its JSON Schema is where
    ``options()`` and the published catalogue come from. Rules that join several fields go in
    ``check``. Every failure is a ``ConfigError`` naming the field and the value.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)
    method_name: ClassVar[str] = "base"

    ablation: AblationName = Field(
        default="resample", description="resample (corrupted prompts), zero or mean"
    )
    metric: MetricChoice = Field(
        default="logit_diff",
        description="logit_diff, prob, kl, cosine (or a callable in Python)",
    )
    batch_size: int = Field(default=32, ge=1, description="prompt pairs per forward pass")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(_describe(type(self).method_name, exc)) from None

    @model_validator(mode="after")
    def _checked(self) -> Self:
        self.check()
        return self

    def check(self) -> None:
        """Rules across fields that no single annotation can say; subclasses extend it."""

    def replaced(self, **changes: Any) -> Self:
        """A copy with ``changes``, validated like a new config (``model_copy`` is not)."""
        return type(self)(**{**dict(self), **changes})

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe parameters, including ``method``; a callable metric is recorded by name."""
        data: dict[str, Any] = {"method": self.method_name}
        for name, value in self:
            data[name] = metric_name(value) if name == "metric" else value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build from a mapping; strings (CLI ``k=v``) are converted by pydantic."""
        data = dict(data)
        named = data.pop("method", cls.method_name)
        if named != cls.method_name:
            raise ConfigError(f"parameters are for method {named!r}, not {cls.method_name!r}")
        unknown = sorted(set(data) - set(cls.model_fields))
        if "positions" in unknown:
            raise ConfigError(_no_positions(cls.method_name))
        if unknown:
            raise ConfigError(
                f"unknown parameter(s) {', '.join(unknown)} for method {cls.method_name!r}; "
                f"known: {', '.join(cls.model_fields)}"
            )
        return cls(**data)

    @classmethod
    def options(cls) -> list[dict[str, Any]]:
        """Every option from the JSON Schema: name, type, default and help (CLI and API)."""
        properties = cls.model_json_schema()["properties"]
        return [
            {
                "name": name,
                "type": _type_label(properties[name]),
                "default": properties[name].get("default"),
                "help": properties[name].get("description", ""),
            }
            for name in cls.model_fields
        ]


_JSON_TYPES = {"integer": "int", "number": "float", "boolean": "bool", "string": "str"}


def _type_label(schema: Mapping[str, Any]) -> str:
    """A short type for people from a JSON Schema property: ``int``, ``'a' | 'b'``, ..."""
    if "enum" in schema:
        return " | ".join(repr(v) for v in schema["enum"])
    if "const" in schema:
        return repr(schema["const"])
    if "anyOf" in schema:
        return " | ".join(_type_label(s) for s in schema["anyOf"])
    kind = schema.get("type")
    return "None" if kind == "null" else _JSON_TYPES.get(str(kind), str(kind))


def _describe(method: str, exc: ValidationError) -> str:
    """One line per problem: ``field=value: what is wrong`` (the first three)."""
    problems = []
    for error in exc.errors()[:3]:
        where = ".".join(str(part) for part in error["loc"] if not isinstance(part, int))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "value_error" or not where:
            problems.append(message)
        else:
            problems.append(f"{where}={error['input']!r}: {message}")
    more = len(exc.errors()) - len(problems)
    tail = f" (and {more} more)" if more > 0 else ""
    return f"bad parameters for {method!r}: " + "; ".join(problems) + tail


@dataclass(frozen=True)
class ScoreResult:
    """What a method returns: signed edge scores and the cost of computing them.

    ``edge_scores`` is ``[n_edges]`` in ``graph.edges`` order, on the CPU. Larger magnitude
    means more important; the sign says whether the edge helps (+) or hurts (-) the metric's
    direction as the method defines it. ``circuit`` is the method's own circuit where it
    selects one (ACDC's kept edges, mask pruning's masks): a bool mask in ``graph.edges``
    order. ``extra`` holds method-specific measurements (clean and corrupted metric, ...).

    ``position_scores`` is set by a positional run (a method's ``positions="index"`` or
    ``"spans"``): the scores of every edge at every position of ``positions`` (the run's
    ``PositionMap``: token indices, or named spans plus ``other``), ``[n_edges, Q]`` on the
    CPU (edge-major, position-minor, the positional edges of ``workers/graph.py``). For a
    linear method (EAP, RelP, EAP-IG) ``edge_scores`` is then its sum over positions, so
    everything that reads ``edge_scores`` sees the unpositioned circuit; a patching method's
    ``edge_scores`` are each edge patched at every position at once, which is the
    unpositioned run's scores (patch effects do not add up over positions). ``circuit`` may
    then be ``[n_edges, Q]`` too (ACDC's kept positional edges).
    """

    edge_scores: torch.Tensor
    method: str
    params: dict[str, Any]
    n_forward: int
    n_backward: int
    seconds: float
    node_scores: torch.Tensor | None = None
    circuit: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    position_scores: torch.Tensor | None = None
    positions: PositionMap | None = None


class Method(Protocol):
    """A discovery method."""

    def __call__(
        self,
        model: TransformerBridge,
        task: TaskData,
        graph: ComputationalGraph,
        config: Any,
        progress: ProgressFn | None = None,
    ) -> ScoreResult:
        """Score every edge of ``graph`` on ``task``."""
        ...


def _versions() -> dict[str, str | None]:
    import importlib.metadata as md

    def version(pkg: str) -> str | None:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return None

    return {
        "code_version": version("circuitreg"),
        "transformer_lens_version": version("transformer-lens"),
        "torch_version": torch.__version__,
    }


DEFAULT_TOP_K = 100


def default_selection(result: ScoreResult, graph: ComputationalGraph) -> Selection | torch.Tensor:
    """The edges a run keeps when its caller names no selection.

    The method's own circuit where it returns one (``ScoreResult.circuit``: ACDC's kept
    edges, mask pruning's learned masks), otherwise the ``DEFAULT_TOP_K`` highest-|score|
    edges. The CLI and the worker both use it, so a ``discover`` run and a queued job of the
    same method keep the same edges.
    """
    if result.circuit is not None:
        return result.circuit.bool().cpu()
    return Selection("top_k", min(DEFAULT_TOP_K, graph.n_edges))


def _no_positions(method: str) -> str:
    """Why ``positions`` is refused, naming the methods that take it (CLI and job params)."""
    from circuitreg.workers.methods.registry import default_registry

    registry = default_registry()
    takes = [n for n in registry.names() if "positions" in registry.get(n).config_cls.model_fields]
    return f"method {method!r} does not score positions; methods that do: {', '.join(takes)}"


def to_document(
    result: ScoreResult,
    graph: ComputationalGraph,
    selection: Selection | torch.Tensor | None,
    model_ref: ModelRef,
    task: TaskData | TaskRef,
    *,
    seed: int | None = None,
    job_id: str | None = None,
    device: str | None = None,
    extra: dict[str, Any] | None = None,
    prompt_tokens: Sequence[str] | None = None,
) -> CircuitDocument:
    """The interchange document: every edge with its score and ``in_circuit`` flag.

    ``selection`` is a ``Selection`` (applied to the scores), a boolean ``[n_edges]`` mask
    already chosen (ACDC's kept edges), or None for ``default_selection``. The task's
    corruption, the versions of TransformerLens and torch, and the selection are recorded.
    A positional result adds its position axis and kept positional edges
    (``positional_document.py``); ``prompt_tokens`` (the first clean prompt, decoded) label
    the axis, else the token ids do.
    """
    graph.check_edge_vector(result.edge_scores)
    if selection is None and result.circuit is not None and result.circuit.ndim == 2:
        selection = result.circuit.bool().any(-1).cpu()  # edges kept at some position
    elif selection is None:
        selection = default_selection(result, graph)
    if (model_ref.n_layers, model_ref.n_heads) != (graph.n_layers, graph.n_heads):
        raise ConfigError(
            f"model {model_ref.name!r} is {model_ref.n_layers}x{model_ref.n_heads} but the graph "
            f"is {graph.n_layers}x{graph.n_heads}"
        )
    mask, selection_info = _apply_selection(result, graph, selection)
    task_ref = task if isinstance(task, TaskRef) else _task_ref(task)
    scores = result.edge_scores.detach().float().cpu().tolist()
    flags = mask.tolist()
    edges = tuple(
        Edge.from_name(name, score=scores[i], in_circuit=bool(flags[i]))
        for i, name in enumerate(graph.edges)
    )
    components = _components(result, graph, mask)
    axis, positional_info = None, {}
    if result.position_scores is not None and result.positions is not None:
        tokens = prompt_tokens
        if tokens is None and isinstance(task, TaskData):
            tokens = [str(t) for t in task.clean[0].tolist()]
        axis = position_axis(result.positions, tokens or ())
        kept, info = positional_mask(result.position_scores, selection, result.circuit)
        more_edges, more_components = positional_entries(
            graph, result.positions, result.position_scores, kept
        )
        edges, components = edges + more_edges, components + more_components
        positional_info = {"positional_selection": info}
    params = {k: v for k, v in result.params.items() if k not in ("ablation", "metric")}
    provenance_extra = {
        "selection": selection_info,
        **positional_info,
        **({"task_summary": dict(task.summary)} if isinstance(task, TaskData) else {}),
        "n_forward": result.n_forward,
        "n_backward": result.n_backward,
        "seconds": round(result.seconds, 4),
        **(extra or {}),
    }
    return CircuitDocument(
        model=model_ref,
        task=task_ref,
        method=MethodRef(name=result.method, params=params),
        ablation=str(result.params.get("ablation", "resample")),
        metric=str(result.params.get("metric", "logit_diff")),
        seed=seed,
        components=components,
        edges=edges,
        positions=axis,
        provenance=Provenance(**_versions(), device=device, job_id=job_id, extra=provenance_extra),
    )


def _apply_selection(
    result: ScoreResult, graph: ComputationalGraph, selection: Selection | torch.Tensor
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The kept-edge mask and the selection as recorded (with its note where it has one)."""
    if isinstance(selection, Selection):
        outcome = explain_selection(result.edge_scores, graph, selection)
        info: dict[str, Any] = selection.to_dict()
        if outcome.note is not None:
            info["note"] = outcome.note
        return outcome.mask, info
    graph.check_edge_vector(selection)
    mask = selection.bool().cpu()
    return mask, {"mode": "mask", "n_edges": int(mask.sum())}


def _components(
    result: ScoreResult, graph: ComputationalGraph, mask: torch.Tensor
) -> tuple[Component, ...]:
    """Every node, flagged when a kept edge touches it, with its score where the method gave one."""
    in_circuit = set(graph.nodes_in(mask))
    node_scores = (
        result.node_scores.detach().float().cpu().tolist()
        if result.node_scores is not None and result.node_scores.numel() == graph.n_nodes
        else None
    )
    return tuple(
        Component.from_name(
            name,
            score=None if node_scores is None else node_scores[i],
            in_circuit=name in in_circuit,
        )
        for i, name in enumerate(graph.nodes)
    )


def _task_ref(task: TaskData) -> TaskRef:
    return TaskRef(
        name=task.name,
        spec=task.describe()["spec"],
        corruption=task.corruption,
        dataset_hash=task.dataset_hash,
        n_examples=task.n_examples,
    )
