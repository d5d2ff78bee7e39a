"""Output types of the analytical queries: shared subcircuits, comparisons, evolution, motifs."""

from __future__ import annotations

import strawberry

from circuitreg.services.stores import types as st

from .context import Info
from .pagination import DEFAULT_PAGE_SIZE, Connection, paginate_in_order
from .scalars import Receiver
from .types_circuit import Circuit, ConsistencyReport


@strawberry.type
class CircuitScore:
    """An edge's importance in one circuit."""

    circuit_id: str
    score: float | None


@strawberry.type
class SharedEdge:
    """An edge found in ``support`` of the compared circuits."""

    edge: str
    source: str
    target: str
    receiver: Receiver | None
    support: int
    scores: list[CircuitScore]

    @classmethod
    def of(cls, shared: st.SharedEdge) -> SharedEdge:
        return cls(
            edge=shared.edge,
            source=shared.source,
            target=shared.target,
            receiver=shared.receiver,
            support=shared.support,
            scores=[CircuitScore(circuit_id=k, score=v) for k, v in sorted(shared.scores.items())],
        )


@strawberry.type
class SharedSubcircuit:
    """Edges (by support, then name) and components common to a set of circuits."""

    circuit_ids: list[str]
    min_support: int
    components: list[str]
    shared: strawberry.Private[tuple[st.SharedEdge, ...]]

    @strawberry.field
    def n_edges(self) -> int:
        return len(self.shared)

    @strawberry.field
    def edges(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Connection[SharedEdge]:
        return paginate_in_order(
            self.shared,
            first=first,
            after=after,
            max_page_size=info.context.services.settings.max_page_size,
            convert=SharedEdge.of,
        )


def _names(info: Info, names: tuple[str, ...], first: int, after: str | None) -> Connection[str]:
    return paginate_in_order(
        names,
        first=first,
        after=after,
        max_page_size=info.context.services.settings.max_page_size,
        convert=str,
    )


@strawberry.type
class CircuitComparison:
    """A consistency report of two circuits and the edges that set them apart."""

    a: Circuit
    b: Circuit
    consistency: ConsistencyReport
    diff: strawberry.Private[st.CircuitDiff]

    @strawberry.field(description="Edge names only in a, sorted.")
    def only_a(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Connection[str]:
        return _names(info, self.diff.only_a, first, after)

    @strawberry.field(description="Edge names only in b, sorted.")
    def only_b(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Connection[str]:
        return _names(info, self.diff.only_b, first, after)

    @strawberry.field(description="Edge names in both, sorted.")
    def both(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Connection[str]:
        return _names(info, self.diff.both, first, after)


@strawberry.type
class EvolutionStep:
    """The circuit at one checkpoint, with the edges that appeared or vanished there."""

    checkpoint: str | None
    step: int | None
    edges: list[str]
    appeared: list[str]
    disappeared: list[str]
    circuit_id: str

    @strawberry.field
    async def circuit(self, info: Info) -> Circuit | None:
        summary = await info.context.loaders.summary.load(self.circuit_id)
        return None if summary is None else Circuit(summary=summary)


@strawberry.type
class EdgeLifetime:
    """When an edge was first seen and, if it vanished for good, the first step without it."""

    edge: str
    appeared_at_checkpoint: str | None
    appeared_at_step: int | None
    disappeared_at_checkpoint: str | None
    disappeared_at_step: int | None


@strawberry.type
class Evolution:
    """A model's circuits for one task and method, in training order."""

    model: str
    task: str
    method: str
    raw: strawberry.Private[st.Evolution]

    @strawberry.field(description="One entry per checkpoint, in step order.")
    def steps(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Connection[EvolutionStep]:
        return paginate_in_order(
            self.raw.steps,
            first=first,
            after=after,
            max_page_size=info.context.services.settings.max_page_size,
            convert=lambda s: EvolutionStep(
                checkpoint=s.checkpoint,
                step=s.step,
                edges=list(s.edges),
                appeared=list(s.appeared),
                disappeared=list(s.disappeared),
                circuit_id=s.circuit_id,
            ),
        )

    @strawberry.field(description="Each edge ever seen, with when it appeared and vanished.")
    def edge_lifetimes(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Connection[EdgeLifetime]:
        return paginate_in_order(
            edge_lifetimes(self.raw),
            first=first,
            after=after,
            max_page_size=info.context.services.settings.max_page_size,
            convert=lambda x: x,
        )


def edge_lifetimes(evolution: st.Evolution) -> list[EdgeLifetime]:
    """First appearance and final disappearance of every edge, ordered by edge name.

    An edge that vanishes and comes back is reported as alive from its first appearance;
    ``disappeared`` is set only when it is absent from the last checkpoint onwards.
    """
    first_seen: dict[str, st.EvolutionStep] = {}
    last_seen_index: dict[str, int] = {}
    for index, step in enumerate(evolution.steps):
        for edge in step.edges:
            first_seen.setdefault(edge, step)
            last_seen_index[edge] = index
    out: list[EdgeLifetime] = []
    for edge in sorted(first_seen):
        start = first_seen[edge]
        end_index = last_seen_index[edge] + 1
        end = evolution.steps[end_index] if end_index < len(evolution.steps) else None
        out.append(
            EdgeLifetime(
                edge=edge,
                appeared_at_checkpoint=start.checkpoint,
                appeared_at_step=start.step,
                disappeared_at_checkpoint=end.checkpoint if end else None,
                disappeared_at_step=end.step if end else None,
            )
        )
    return out


@strawberry.type
class ComponentUse:
    """A circuit containing a component, and how many circuit edges touch it there."""

    circuit: Circuit
    degree: int


@strawberry.type
class SimilarCircuit:
    """A circuit and how alike its mechanism is to the query circuit's."""

    circuit: Circuit
    similarity: float = strawberry.field(
        description="Exact cosine of the two mechanism embeddings, in (0, 1]."
    )


@strawberry.type
class MotifBinding:
    """One motif variable bound to a component name."""

    variable: str
    component: str


@strawberry.type
class MotifMatch:
    """A circuit containing the motif, with every way the motif binds in it."""

    circuit_id: str
    bindings: list[list[MotifBinding]]

    @strawberry.field
    async def circuit(self, info: Info) -> Circuit | None:
        summary = await info.context.loaders.summary.load(self.circuit_id)
        return None if summary is None else Circuit(summary=summary)

    @classmethod
    def of(cls, match: st.MotifMatch) -> MotifMatch:
        return cls(
            circuit_id=match.circuit_id,
            bindings=[
                [MotifBinding(variable=k, component=v) for k, v in sorted(b.items())]
                for b in match.bindings
            ],
        )
