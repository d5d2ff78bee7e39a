"""Catalogue types: Model (with its checkpoints) and Task, known from the relational catalogue.

A model or task that only appears in imported circuits is still returned, with
``catalogued: false`` and no details.
"""

from __future__ import annotations

import strawberry
from strawberry.scalars import JSON

from ..catalogue import CheckpointInfo, ModelInfo, TaskInfo
from .context import Info
from .pagination import DEFAULT_PAGE_SIZE, Connection, paginate_in_order


@strawberry.type
class Checkpoint:
    """A checkpoint of a model (a training step or hub revision)."""

    label: str
    step: int | None
    path: str | None = None
    sha256: str | None = None

    @classmethod
    def of(cls, info: CheckpointInfo) -> Checkpoint:
        return cls(label=info.label, step=info.step, path=info.path, sha256=info.sha256)


@strawberry.type
class Model:
    """A model; catalogue details are null for models only known from imported circuits."""

    name: str
    architecture: str | None = None
    source: str | None = None
    config: JSON | None = None
    catalogued: bool = False
    checkpoint_list: strawberry.Private[tuple[CheckpointInfo, ...]] = ()

    @classmethod
    def of(cls, name: str, info: ModelInfo | None) -> Model:
        if info is None:
            return cls(name=name)
        return cls(
            name=name,
            architecture=info.architecture,
            source=info.source,
            config=JSON(info.config),
            catalogued=True,
            checkpoint_list=info.checkpoints,
        )

    @strawberry.field(description="Catalogued checkpoints in training order.")
    def checkpoints(
        self, info: Info, first: int = DEFAULT_PAGE_SIZE, after: str | None = None
    ) -> Connection[Checkpoint]:
        return paginate_in_order(
            self.checkpoint_list,
            first=first,
            after=after,
            max_page_size=info.context.services.settings.max_page_size,
            convert=Checkpoint.of,
        )


@strawberry.type
class Task:
    """A task; ``spec`` is the generator specification when catalogued."""

    name: str
    spec: JSON | None = None
    catalogued: bool = False

    @classmethod
    def of(cls, name: str, info: TaskInfo | None) -> Task:
        if info is None:
            return cls(name=name)
        return cls(name=name, spec=JSON(info.spec), catalogued=True)
