"""Output types of circuits: Circuit, Component, CircuitEdge, ValidationResult, Run, Model, Task.

A ``Circuit`` wraps a store summary; its edges, components, validation and provenance come
from the full document, loaded once per request per circuit through a DataLoader.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry.scalars import JSON

from circuitreg import schema as cs
from circuitreg.services.analysis.results import FAITHFULNESS, latest_result
from circuitreg.services.stores.types import CircuitSummary

from .context import Info
from .errors import NotFoundError
from .pagination import (
    DEFAULT_PAGE_SIZE,
    Connection,
    check_first,
    paginate_in_order,
    paginate_sorted,
)
from .positions import PositionAxis, position_filter, position_key
from .scalars import ComponentKind, Receiver
from .types_catalogue import Model, Task

if TYPE_CHECKING:
    from .types_jobs import Job


@strawberry.type
class Component:
    """A node of a circuit (head, MLP, input, logits) with its score and role labels."""

    name: str
    kind: ComponentKind
    layer: int | None
    head: int | None
    position: int | None = strawberry.field(description="Token index, if at one.")
    span: str | None = strawberry.field(description="Named position (e.g. S2), if at one.")
    hook_name: str | None
    score: float | None
    labels: list[str]

    @classmethod
    def of(cls, comp: cs.Component, labels: tuple[str, ...]) -> Component:
        return cls(
            name=comp.name,
            kind=comp.kind,
            layer=comp.layer,
            head=comp.head,
            position=comp.position,
            span=comp.span,
            hook_name=comp.hook_name,
            score=comp.score,
            labels=list(labels),
        )


@strawberry.type
class CircuitEdge:
    """A directed edge of a circuit, e.g. ``a0.h1->a1.h2<k>``."""

    name: str
    source: str
    target: str
    receiver: Receiver | None
    score: float | None
    position: int | None = strawberry.field(
        description="Token index of a positional edge (writer and reader), if known."
    )
    span: str | None = strawberry.field(description="Named position of a positional edge.")
    positional: bool = strawberry.field(
        description="At a position or span; false for a summed edge (over all positions)."
    )

    @classmethod
    def of(cls, edge: cs.Edge) -> CircuitEdge:
        return cls(
            name=edge.name,
            source=edge.source,
            target=edge.target,
            receiver=edge.receiver,
            score=edge.score,
            position=edge.position,
            span=edge.span,
            positional=edge.positional,
        )


@strawberry.type
class ValidationResult:
    """One validation measurement (faithfulness, curve, controls) under an ablation."""

    name: str
    ablation: str
    metric: str
    corruption: str | None
    values: JSON
    passed: bool | None
    created_at: datetime

    @classmethod
    def of(cls, result: cs.ValidationResult) -> ValidationResult:
        return cls(
            name=result.name,
            ablation=result.ablation,
            metric=result.metric,
            corruption=result.corruption,
            values=JSON(result.values),
            passed=result.passed,
            created_at=result.created_at,
        )


@strawberry.type
class ConsistencyReport:
    """How alike two circuits are, and under which alignment they were compared."""

    alignment: str
    edge_jaccard: float
    node_jaccard: float
    weighted_overlap: float
    rank_correlation: float | None
    shared_edges: int
    canonical_cosine: float = strawberry.field(
        description="Cosine of the canonical mechanism embeddings (edge importances)."
    )
    role_aligned_cosine: float = strawberry.field(
        description="Cosine of the role-aligned mechanism embeddings (heads by their roles)."
    )
    performance_a: float | None
    performance_b: float | None
    performance_agrees: bool | None
    tolerance: float | None
    note: str

    @classmethod
    def of(cls, report: cs.ConsistencyReport) -> ConsistencyReport:
        return cls(**report.model_dump())


@strawberry.type
class Run:
    """How a circuit was produced: method parameters, software versions, device, job."""

    method: str
    params: JSON
    ablation: str
    metric: str
    seed: int | None
    corruption: str | None
    dataset_hash: str | None
    code_version: str | None
    transformer_lens_version: str | None
    torch_version: str | None
    device: str | None
    source_format: str | None
    job_id: str | None
    created_at: datetime


@strawberry.type
class Circuit:
    """A stored circuit: its summary, and its graph loaded on demand."""

    summary: strawberry.Private[CircuitSummary]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(self.summary.id)

    @strawberry.field
    def model_name(self) -> str:
        return self.summary.model

    @strawberry.field
    def task_name(self) -> str:
        return self.summary.task

    @strawberry.field
    def checkpoint(self) -> str | None:
        return self.summary.checkpoint

    @strawberry.field
    def step(self) -> int | None:
        return self.summary.step

    @strawberry.field
    def method(self) -> str:
        return self.summary.method

    @strawberry.field
    def ablation(self) -> str:
        return self.summary.ablation

    @strawberry.field
    def metric(self) -> str:
        return self.summary.metric

    @strawberry.field
    def seed(self) -> int | None:
        return self.summary.seed

    @strawberry.field
    def n_components(self) -> int:
        return self.summary.n_components

    @strawberry.field
    def n_edges(self) -> int:
        return self.summary.n_edges

    @strawberry.field(
        description="Latest faithfulness, if validated; null also when it is undefined "
        "(see faithfulnessUndefined)."
    )
    def faithfulness(self) -> float | None:
        return self.summary.faithfulness

    @strawberry.field(
        description="The clean-minus-ablated metric gap the latest faithfulness was "
        "normalised by, if validated."
    )
    async def faithfulness_gap(self, info: Info) -> float | None:
        values = await self._latest_faithfulness(info)
        gap = None if values is None else values.get("gap")
        return float(gap) if isinstance(gap, int | float) else None

    @strawberry.field(
        description="Why the latest faithfulness is undefined (its gap is within noise of "
        "zero), or null when it is defined or the circuit is not validated."
    )
    async def faithfulness_undefined(self, info: Info) -> str | None:
        values = await self._latest_faithfulness(info)
        reason = None if values is None else values.get("undefined")
        return str(reason) if reason else None

    async def _latest_faithfulness(self, info: Info) -> dict[str, object] | None:
        """The latest faithfulness result's values (the document is loaded once a request)."""
        result = latest_result(await self.document(info), FAITHFULNESS)
        return None if result is None else dict(result.values)

    @strawberry.field
    def tags(self) -> list[str]:
        return list(self.summary.tags)

    @strawberry.field
    def aliases(self) -> list[str]:
        return list(self.summary.aliases)

    @strawberry.field
    def dense_scores_uri(self) -> str | None:
        return self.summary.dense_scores_uri

    @strawberry.field
    def created_at(self) -> datetime | None:
        return self.summary.created_at

    @strawberry.field
    async def model(self, info: Info) -> Model:
        found = await info.context.loaders.model.load(self.summary.model)
        return Model.of(self.summary.model, found)

    @strawberry.field
    async def task(self, info: Info) -> Task:
        found = await info.context.loaders.task.load(self.summary.task)
        return Task.of(self.summary.task, found)

    @strawberry.field(description="The job that produced this circuit, if any.")
    async def job(self, info: Info) -> Annotated[Job, strawberry.lazy(".types_jobs")] | None:
        from .types_jobs import Job

        if self.summary.job_id is None:
            return None
        record = await info.context.loaders.job.load(self.summary.job_id)
        return None if record is None else Job.of(record)

    async def document(self, info: Info) -> cs.CircuitDocument:
        doc = await info.context.loaders.document.load(self.summary.id)
        if doc is None:
            raise NotFoundError(f"circuit {self.summary.id!r} vanished while being read")
        return doc

    @strawberry.field(description="Provenance: parameters, versions, device and job.")
    async def run(self, info: Info) -> Run:
        doc = await self.document(info)
        p = doc.provenance
        return Run(
            method=doc.method.name,
            params=JSON(doc.method.params),
            ablation=doc.ablation,
            metric=doc.metric,
            seed=doc.seed,
            corruption=doc.task.corruption,
            dataset_hash=doc.task.dataset_hash,
            code_version=p.code_version,
            transformer_lens_version=p.transformer_lens_version,
            torch_version=p.torch_version,
            device=p.device,
            source_format=p.source_format,
            job_id=p.job_id or self.summary.job_id,
            created_at=p.created_at,
        )

    @strawberry.field(
        description="The position axis of a positional circuit (null for an unpositioned one)."
    )
    async def positions(self, info: Info) -> PositionAxis | None:
        axis = (await self.document(info)).positions
        return None if axis is None else PositionAxis.of(axis)

    @strawberry.field(
        description="In-circuit components in model order, then by position; filtered by "
        "token index, span, and positional (false: unpositioned components only)."
    )
    async def components(
        self,
        info: Info,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
        position: int | None = None,
        span: str | None = None,
        positional: bool | None = None,
    ) -> Connection[Component]:
        filt = position_filter(position, span, positional)
        doc = await self.document(info)
        comps = sorted(filt.keep(doc.circuit_components()), key=_component_key)
        return paginate_sorted(
            comps,
            key=_component_key,
            first=first,
            after=after,
            max_page_size=info.context.services.settings.max_page_size,
            convert=lambda c: Component.of(c, doc.labels.get(c.name, ())),
        )

    @strawberry.field(
        description="In-circuit edges ordered by name and position. A positional circuit "
        "holds its summed edges and the positional ones refining them: filter by token "
        "index, span (e.g. END), positional (false: the summed circuit) and an end component "
        "('this head at S2'); a position or span is looked up in the store's index."
    )
    async def edges(
        self,
        info: Info,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
        position: int | None = None,
        span: str | None = None,
        positional: bool | None = None,
        component: str | None = None,
    ) -> Connection[CircuitEdge]:
        filt = position_filter(position, span, positional, component)
        services = info.context.services
        if filt.indexed:
            found: list[cs.Edge] = await services.call(
                services.store.edges_at,
                self.summary.id,
                position=filt.position,
                span=filt.span,
                component=filt.component,
            )
        else:
            found = filt.keep((await self.document(info)).circuit_edges())
        return paginate_sorted(
            sorted(found, key=_edge_key),
            key=_edge_key,
            first=first,
            after=after,
            max_page_size=services.settings.max_page_size,
            convert=CircuitEdge.of,
        )

    @strawberry.field(description="Paths input -> logits inside the circuit, sorted.")
    async def paths(self, info: Info, first: int = DEFAULT_PAGE_SIZE) -> list[list[str]]:
        services = info.context.services
        check_first(first, services.settings.max_page_size)
        found = await services.call(services.store.paths, self.summary.id, first)
        return [list(p) for p in found]

    @strawberry.field(description="Validation results, oldest first.")
    async def validation(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Connection[ValidationResult]:
        doc = await self.document(info)
        return paginate_in_order(
            doc.validation,
            first=first,
            after=after,
            max_page_size=info.context.services.settings.max_page_size,
            convert=ValidationResult.of,
        )


def _component_key(comp: cs.Component) -> str:
    """A string key that sorts components in model order (zero-padded for string order)."""
    layer, kind, head = cs.node_order_key(comp.name)
    at = position_key(comp.position, comp.span)
    return f"{layer + 1:010d}.{kind}.{head:05d}.{at}.{comp.name}"


def _edge_key(edge: cs.Edge) -> str:
    return f"{edge.name}#{position_key(edge.position, edge.span)}"
