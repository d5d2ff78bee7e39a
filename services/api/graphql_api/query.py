"""Root query: circuits, analytics (shared subcircuits, comparison, evolution, motifs), jobs."""

from __future__ import annotations

import asyncio
from itertools import product

import strawberry

from circuitreg.services.stores.types import CircuitSummary

from .context import Info
from .errors import InputError
from .inputs import CircuitFilterInput, MotifInput, check_component, check_edge, check_text
from .methods import DiscoveryMethod, list_methods
from .pagination import (
    DEFAULT_PAGE_SIZE,
    Connection,
    ConnectionEdge,
    PageInfo,
    check_first,
    decode_cursor,
    encode_cursor,
    paginate_sorted,
)
from .permissions import READ
from .positions import position_filter
from .resolve import require_circuit, resolve_circuit_ref
from .types_catalogue import Model, Task
from .types_circuit import Circuit, ConsistencyReport
from .types_jobs import Job, JobState
from .types_results import (
    CircuitComparison,
    ComponentUse,
    Evolution,
    MotifMatch,
    SharedSubcircuit,
    SimilarCircuit,
)

MAX_SHARED_CIRCUITS = 200
MAX_MOTIF_MATCHES = 1000


def _circuit_connection(items: list[CircuitSummary], has_next: bool) -> Connection[Circuit]:
    edges = [ConnectionEdge(cursor=encode_cursor(s.id), node=Circuit(summary=s)) for s in items]
    return Connection(
        edges=edges,
        page_info=PageInfo(has_next_page=has_next, end_cursor=edges[-1].cursor if edges else None),
    )


@strawberry.type
class Query:
    @strawberry.field(permission_classes=READ, description="A circuit by id or alias.")
    async def circuit(self, info: Info, id: str) -> Circuit | None:
        circuit_id = await resolve_circuit_ref(info, "id", id)
        if circuit_id is None:
            return None
        summary = await info.context.loaders.summary.load(circuit_id)
        return None if summary is None else Circuit(summary=summary)

    @strawberry.field(permission_classes=READ, description="Circuits matching a filter, by id.")
    async def circuits(
        self,
        info: Info,
        filter: CircuitFilterInput | None = None,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> Connection[Circuit]:
        services = info.context.services
        check_first(first, services.settings.max_page_size)
        filt = (filter or CircuitFilterInput()).to_store()
        page = await services.call(services.store.list_circuits, filt, first, decode_cursor(after))
        for summary in page.items:
            info.context.loaders.summary.prime(summary.id, summary)
        return _circuit_connection(list(page.items), page.has_next)

    @strawberry.field(
        permission_classes=READ,
        description="Edges common to circuits: given by id/alias, or all circuits of the "
        "given models and tasks (optionally one method).",
    )
    async def shared_subcircuits(
        self,
        info: Info,
        circuit_ids: list[str] | None = None,
        models: list[str] | None = None,
        tasks: list[str] | None = None,
        method: str | None = None,
        min_support: int = 2,
        min_importance: float = 0.0,
    ) -> SharedSubcircuit:
        services = info.context.services
        if min_importance < 0 or min_importance != min_importance:
            raise InputError("minImportance", f"must be >= 0, got {min_importance}")
        if circuit_ids:
            if len(circuit_ids) > MAX_SHARED_CIRCUITS:
                raise InputError("circuitIds", f"at most {MAX_SHARED_CIRCUITS} circuits")
            # Gathered, so that ids are checked in one DataLoader batch.
            ids = list(
                await asyncio.gather(
                    *(
                        require_circuit(info, f"circuitIds[{i}]", ref)
                        for i, ref in enumerate(circuit_ids)
                    )
                )
            )
        elif models and tasks:
            ids = await _circuits_of(info, models, tasks, method)
        else:
            raise InputError("circuitIds", "give circuitIds, or both models and tasks")
        ids = sorted(set(ids))
        if not 1 <= min_support <= max(len(ids), 1):
            raise InputError("minSupport", f"must be between 1 and {len(ids)} (circuits compared)")
        shared = await services.call(
            services.store.shared_subcircuit, ids, min_support, min_importance
        )
        return SharedSubcircuit(
            circuit_ids=list(shared.circuit_ids),
            min_support=shared.min_support,
            components=list(shared.components),
            shared=shared.edges,
        )

    @strawberry.field(permission_classes=READ, description="Consistency and edge diff of a and b.")
    async def compare_circuits(
        self, info: Info, a: str, b: str, alignment: str = "auto"
    ) -> CircuitComparison:
        from circuitreg.services.analysis.consistency import compare_circuits

        if alignment not in ("auto", "canonical", "relative_depth", "roles"):
            raise InputError("alignment", "one of auto, canonical, relative_depth, roles")
        services = info.context.services
        id_a = await require_circuit(info, "a", a)
        id_b = await require_circuit(info, "b", b)
        doc_a = await info.context.loaders.document.load(id_a)
        doc_b = await info.context.loaders.document.load(id_b)
        sum_a = await info.context.loaders.summary.load(id_a)
        sum_b = await info.context.loaders.summary.load(id_b)
        assert doc_a and doc_b and sum_a and sum_b  # require_circuit checked existence
        try:
            report = compare_circuits(doc_a, doc_b, alignment=alignment)  # type: ignore[arg-type]
        except ValueError as exc:
            raise InputError("alignment", str(exc)) from None
        diff = await services.call(services.store.diff, id_a, id_b)
        return CircuitComparison(
            a=Circuit(summary=sum_a),
            b=Circuit(summary=sum_b),
            consistency=ConsistencyReport.of(report),
            diff=diff,
        )

    @strawberry.field(permission_classes=READ, description="A circuit at each checkpoint.")
    async def circuit_evolution(self, info: Info, model: str, task: str, method: str) -> Evolution:
        services = info.context.services
        model_ = check_text("model", model, required=True)
        task_ = check_text("task", task, required=True)
        method_ = check_text("method", method, required=True)
        assert model_ and task_ and method_
        raw = await services.call(services.store.evolution, model_, task_, method_)
        return Evolution(model=raw.model, task=raw.task, method=raw.method, raw=raw)

    @strawberry.field(
        permission_classes=READ,
        description="Circuits of a model using a component; with a token position and/or a "
        "span, those where it is at that position ('this head at S2'), its degree then "
        "counting the positional edges there.",
    )
    async def component_usage(
        self,
        info: Info,
        model: str,
        component: str,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
        position: int | None = None,
        span: str | None = None,
    ) -> Connection[ComponentUse]:
        services = info.context.services
        check_component("component", component)
        model_ = check_text("model", model, required=True)
        at = position_filter(position, span)
        uses = await services.call(
            services.store.component_usage, model_, component, position=at.position, span=at.span
        )
        return paginate_sorted(
            uses,
            key=lambda u: u.circuit.id,
            first=first,
            after=after,
            max_page_size=services.settings.max_page_size,
            convert=lambda u: ComponentUse(circuit=Circuit(summary=u.circuit), degree=u.degree),
        )

    @strawberry.field(
        permission_classes=READ,
        description="Circuits of a model with an edge (at a token position and/or span).",
    )
    async def circuits_with_edge(
        self,
        info: Info,
        model: str,
        edge: str,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
        position: int | None = None,
        span: str | None = None,
    ) -> Connection[Circuit]:
        services = info.context.services
        check_edge("edge", edge)
        model_ = check_text("model", model, required=True)
        at = position_filter(position, span)
        found = await services.call(
            services.store.circuits_with_edge, model_, edge, position=at.position, span=at.span
        )
        return paginate_sorted(
            found,
            key=lambda s: s.id,
            first=first,
            after=after,
            max_page_size=services.settings.max_page_size,
            convert=lambda s: Circuit(summary=s),
        )

    @strawberry.field(permission_classes=READ, description="Circuits containing a motif.")
    async def motif_search(
        self,
        info: Info,
        motif: MotifInput,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> Connection[MotifMatch]:
        services = info.context.services
        pattern = motif.to_store()
        matches = await services.call(services.store.motif_search, pattern, MAX_MOTIF_MATCHES)
        return paginate_sorted(
            matches,
            key=lambda m: m.circuit_id,
            first=first,
            after=after,
            max_page_size=services.settings.max_page_size,
            convert=MotifMatch.of,
        )

    @strawberry.field(
        permission_classes=READ,
        description="Circuits whose mechanism is most like this one's, best first, itself "
        "excluded: cosine of mechanism embeddings (edge importances; with aligned, heads "
        "labelled with a role are compared by role, so other seeds and models match).",
    )
    async def similar_circuits(
        self, info: Info, circuit: str, first: int = 10, aligned: bool = True
    ) -> list[SimilarCircuit]:
        services = info.context.services
        check_first(first, services.settings.max_page_size)
        circuit_id = await require_circuit(info, "circuit", circuit)
        found = await services.call(services.store.similar_circuits, circuit_id, first, aligned)
        for item in found:
            info.context.loaders.summary.prime(item.circuit.id, item.circuit)
        return [
            SimilarCircuit(circuit=Circuit(summary=item.circuit), similarity=item.similarity)
            for item in found
        ]

    @strawberry.field(permission_classes=READ, description="A catalogued or circuit-only model.")
    async def model(self, info: Info, name: str) -> Model:
        found = await info.context.loaders.model.load(name)
        return Model.of(name, found)

    @strawberry.field(permission_classes=READ, description="Discovery methods and options.")
    def methods(self) -> list[DiscoveryMethod]:
        return list_methods()

    @strawberry.field(permission_classes=READ, description="Catalogued models by name.")
    async def models(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Connection[Model]:
        from ..catalogue import model_names

        services = info.context.services
        check_first(first, services.settings.max_page_size)
        names, more = await services.call(model_names, services.engine, first, decode_cursor(after))
        infos = await info.context.loaders.model.load_many(names)
        models = [Model.of(n, found) for n, found in zip(names, infos, strict=True)]
        edges = [ConnectionEdge(cursor=encode_cursor(m.name), node=m) for m in models]
        return Connection(
            edges=edges,
            page_info=PageInfo(has_next_page=more, end_cursor=edges[-1].cursor if edges else None),
        )

    @strawberry.field(permission_classes=READ, description="Catalogued tasks by name.")
    async def tasks(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Connection[Task]:
        from ..catalogue import task_names

        services = info.context.services
        check_first(first, services.settings.max_page_size)
        names, more = await services.call(task_names, services.engine, first, decode_cursor(after))
        infos = await info.context.loaders.task.load_many(names)
        tasks = [Task.of(n, found) for n, found in zip(names, infos, strict=True)]
        edges = [ConnectionEdge(cursor=encode_cursor(t.name), node=t) for t in tasks]
        return Connection(
            edges=edges,
            page_info=PageInfo(has_next_page=more, end_cursor=edges[-1].cursor if edges else None),
        )

    @strawberry.field(permission_classes=READ, description="A job by id.")
    async def job(self, info: Info, id: strawberry.ID) -> Job | None:
        record = await info.context.loaders.job.load(str(id))
        return None if record is None else Job.of(record)

    @strawberry.field(permission_classes=READ, description="Jobs, newest first.")
    async def jobs(
        self,
        info: Info,
        status: JobState | None = None,
        first: int = DEFAULT_PAGE_SIZE,
        after: str | None = None,
    ) -> Connection[Job]:
        services = info.context.services
        check_first(first, services.settings.max_page_size)
        try:
            page = await services.call(
                services.queue.list,
                status=status.value if status else None,
                first=first,
                after=decode_cursor(after),
            )
        except ValueError as exc:  # the queue names a cursor that matches no job
            raise InputError("after", str(exc)) from None
        edges = [ConnectionEdge(cursor=encode_cursor(r.id), node=Job.of(r)) for r in page.items]
        return Connection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next,
                end_cursor=encode_cursor(page.end_cursor) if page.end_cursor else None,
            ),
        )


async def _circuits_of(
    info: Info, models: list[str], tasks: list[str], method: str | None
) -> list[str]:
    """Ids of every circuit of the given models x tasks, refusing more than the bound."""
    services = info.context.services
    ids: list[str] = []
    for model, task in product(models, tasks):
        filt = CircuitFilterInput(model=model, task=task, method=method).to_store()
        after: str | None = None
        while True:
            page = await services.call(services.store.list_circuits, filt, 100, after)
            ids.extend(s.id for s in page.items)
            if len(ids) > MAX_SHARED_CIRCUITS:
                raise InputError("models", f"selects more than {MAX_SHARED_CIRCUITS} circuits")
            if not page.has_next:
                break
            after = page.end_cursor
    if not ids:
        raise InputError("models", "no circuit matches these models and tasks")
    return ids
