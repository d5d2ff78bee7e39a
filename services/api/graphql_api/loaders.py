"""Per-request DataLoaders: every circuit, document, model or task on a page in one store call.

Created fresh for each request (``Loaders.create``) so that nothing cached outlives the
request that read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from strawberry.dataloader import DataLoader

from circuitreg.schema import CircuitDocument
from circuitreg.services.stores.types import CircuitSummary

from ..catalogue import ModelInfo, TaskInfo, models_by_name, tasks_by_name
from ..services import ApiServices


@dataclass
class Loaders:
    """The DataLoaders of one request."""

    summary: DataLoader[str, CircuitSummary | None]
    document: DataLoader[str, CircuitDocument | None]
    model: DataLoader[str, ModelInfo | None]
    task: DataLoader[str, TaskInfo | None]
    job: DataLoader[str, object | None]

    @classmethod
    def create(cls, services: ApiServices) -> Loaders:
        """Fresh loaders bound to ``services``."""

        async def load_summaries(ids: list[str]) -> Sequence[CircuitSummary | None]:
            found = await services.call(services.store.get_summaries, ids)
            return [found.get(i) for i in ids]

        def get_documents(ids: list[str]) -> list[CircuitDocument | None]:
            # The store has no batch read of whole documents; one thread hop reads them all.
            return [services.store.get_circuit(i) for i in ids]

        async def load_documents(ids: list[str]) -> Sequence[CircuitDocument | None]:
            return await services.call(get_documents, ids)

        async def load_models(names: list[str]) -> Sequence[ModelInfo | None]:
            found = await services.call(models_by_name, services.engine, names)
            return [found.get(n) for n in names]

        async def load_tasks(names: list[str]) -> Sequence[TaskInfo | None]:
            found = await services.call(tasks_by_name, services.engine, names)
            return [found.get(n) for n in names]

        def get_jobs(ids: list[str]) -> list[object | None]:
            from circuitreg.services.queue.models import JobNotFoundError

            out: list[object | None] = []
            for job_id in ids:
                try:
                    out.append(services.queue.get(job_id))
                except JobNotFoundError:
                    out.append(None)
            return out

        async def load_jobs(ids: list[str]) -> Sequence[object | None]:
            return await services.call(get_jobs, ids)

        return cls(
            summary=DataLoader(load_fn=load_summaries),
            document=DataLoader(load_fn=load_documents),
            model=DataLoader(load_fn=load_models),
            task=DataLoader(load_fn=load_tasks),
            job=DataLoader(load_fn=load_jobs),
        )
