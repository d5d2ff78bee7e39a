"""Root mutation: submit and cancel jobs, import circuits, tag, alias, annotate, make tokens.

Each mutation converts and checks all of its inputs before writing anything, so a refused
mutation leaves the store unchanged; each store write is itself atomic and idempotent.
"""

from __future__ import annotations

from typing import Any

import strawberry
from pydantic import ValidationError

from circuitreg.services.queue import JobNotFoundError, JobSpec

from ..auth import Scope, TokenError, create_token
from .context import Info
from .errors import InputError
from .importing import import_document
from .inputs import DiscoveryInput, ValidationInput, check_component, check_text, pydantic_error
from .methods import check_discovery
from .permissions import ADMIN, WRITE
from .resolve import looks_like_id, require_circuit
from .types_circuit import Circuit
from .types_jobs import Job

MAX_IMPORT_BYTES = 64 * 1024 * 1024


@strawberry.type
class ComponentAnnotation:
    """A model component and all of its role labels after the change."""

    model: str
    component: str
    labels: list[str]


@strawberry.type
class CreatedToken:
    """A new API token; ``token`` is shown this once and stored only as a hash."""

    name: str
    scope: str
    token: str


def _job_spec(field: str, values: dict[str, Any]) -> JobSpec:
    try:
        return JobSpec(**values)
    except ValidationError as exc:
        raise pydantic_error(field, exc) from None


async def _summary_circuit(info: Info, circuit_id: str) -> Circuit:
    services = info.context.services
    summary = await services.call(services.store.get_summary, circuit_id)
    if summary is None:
        raise InputError("circuit", f"circuit {circuit_id!r} vanished")
    return Circuit(summary=summary)


@strawberry.type
class Mutation:
    @strawberry.mutation(permission_classes=WRITE, description="Queue a discovery job.")
    async def submit_discovery(self, info: Info, input: DiscoveryInput) -> Job:
        services = info.context.services
        params: Any = input.params or {}
        if isinstance(params, dict):  # a non-object is refused by JobSpec below, by field
            check_discovery(check_text("input.method", input.method, required=True) or "", params)
        spec = _job_spec(
            "input",
            {
                "kind": "discovery",
                "model": check_text("input.model", input.model, required=True),
                "model_revision": check_text("input.modelRevision", input.model_revision),
                "task": check_text("input.task", input.task, required=True),
                "method": check_text("input.method", input.method, required=True),
                "params": params,
                "ablation": input.ablation,
                "metric": input.metric,
                "priority": input.priority,
            },
        )
        record = await services.call(services.queue.enqueue, spec)
        return Job.of(record)

    @strawberry.mutation(permission_classes=WRITE, description="Queue a validation job.")
    async def submit_validation(self, info: Info, input: ValidationInput) -> Job:
        services = info.context.services
        circuit_id = await require_circuit(info, "input.circuit", input.circuit)
        spec = _job_spec(
            "input",
            {
                "kind": "validation",
                "model": check_text("input.model", input.model, required=True),
                "task": check_text("input.task", input.task, required=True),
                "params": input.params or {},
                "ablation": input.ablation,
                "metric": input.metric,
                "circuit_id": circuit_id,
                "priority": input.priority,
            },
        )
        record = await services.call(services.queue.enqueue, spec)
        return Job.of(record)

    @strawberry.mutation(permission_classes=WRITE, description="Cancel a queued or running job.")
    async def cancel_job(self, info: Info, id: strawberry.ID) -> Job:
        services = info.context.services
        try:
            record = await services.call(services.queue.cancel, str(id))
        except JobNotFoundError:
            raise InputError("id", f"no job with id {str(id)!r}") from None
        return Job.of(record)

    @strawberry.mutation(
        permission_classes=WRITE,
        description="Import a circuit document given as text in any importable format "
        "(detected when format is omitted); returns the stored circuit.",
    )
    async def import_circuit(
        self,
        info: Info,
        content: str,
        format: str | None = None,
        model: str | None = None,
        task: str | None = None,
        method: str | None = None,
    ) -> Circuit:
        if len(content) > MAX_IMPORT_BYTES:
            raise InputError("content", f"larger than {MAX_IMPORT_BYTES} bytes")
        options = {
            "model": check_text("model", model),
            "task": check_text("task", task),
            "method": check_text("method", method),
        }
        services = info.context.services
        circuit_id = await import_document(
            services, content.encode(), check_text("format", format), options
        )
        return await _summary_circuit(info, circuit_id)

    @strawberry.mutation(permission_classes=WRITE, description="Add a free tag to a circuit.")
    async def tag_circuit(self, info: Info, circuit: str, tag: str) -> Circuit:
        services = info.context.services
        clean = check_text("tag", tag, required=True)
        circuit_id = await require_circuit(info, "circuit", circuit)
        await services.call(services.store.tag, circuit_id, clean)
        return await _summary_circuit(info, circuit_id)

    @strawberry.mutation(permission_classes=WRITE, description="Point a unique alias at a circuit.")
    async def set_alias(self, info: Info, alias: str, circuit: str) -> Circuit:
        services = info.context.services
        clean = check_text("alias", alias, required=True)
        assert clean is not None
        if looks_like_id(clean):
            raise InputError("alias", "must not look like a circuit id (c_ and 32 hex digits)")
        circuit_id = await require_circuit(info, "circuit", circuit)
        await services.call(services.store.set_alias, clean, circuit_id)
        return await _summary_circuit(info, circuit_id)

    @strawberry.mutation(
        permission_classes=WRITE, description="Attach a role label to a component."
    )
    async def annotate_component(
        self, info: Info, model: str, component: str, label: str
    ) -> ComponentAnnotation:
        services = info.context.services
        model_ = check_text("model", model, required=True)
        label_ = check_text("label", label, required=True)
        check_component("component", component)
        assert model_ and label_
        await services.call(services.store.label_component, model_, component, label_)
        labels = await services.call(services.store.component_labels, model_)
        return ComponentAnnotation(
            model=model_, component=component, labels=list(labels.get(component, ()))
        )

    @strawberry.mutation(permission_classes=ADMIN, description="Create an API token.")
    async def create_token(self, info: Info, name: str, scope: str) -> CreatedToken:
        services = info.context.services
        clean = check_text("name", name, required=True)
        if scope not in {s.value for s in Scope}:
            raise InputError("scope", "one of read, write, admin")
        try:
            token = await services.call(create_token, services.engine, clean, scope)
        except TokenError as exc:
            raise InputError("name", str(exc)) from None
        return CreatedToken(name=clean or "", scope=scope, token=token)
