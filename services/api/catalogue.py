"""Read access to the relational catalogue (models, checkpoints, tasks) for the API.

Every function takes many keys at once so that DataLoaders batch a whole page into one query.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select

from circuitreg.services.db import CheckpointRow, ModelRow, TaskRow, session_factory


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """One checkpoint of a catalogued model."""

    label: str
    step: int | None
    path: str | None
    sha256: str | None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A catalogued model and its checkpoints in training order."""

    name: str
    architecture: str
    source: str | None
    config: dict[str, Any]
    checkpoints: tuple[CheckpointInfo, ...]


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A catalogued task and the generator spec that rebuilds its prompts."""

    name: str
    spec: dict[str, Any]


def models_by_name(engine: Engine, names: list[str]) -> dict[str, ModelInfo]:
    """The catalogued models among ``names`` (absent names are simply missing)."""
    with session_factory(engine)() as session:
        rows = session.scalars(select(ModelRow).where(ModelRow.name.in_(names))).all()
        by_model: dict[int, list[CheckpointInfo]] = defaultdict(list)
        if rows:
            ckpts = session.scalars(
                select(CheckpointRow).where(CheckpointRow.model_id.in_([r.id for r in rows]))
            ).all()
            for c in ckpts:
                by_model[c.model_id].append(CheckpointInfo(c.label, c.step, c.path, c.sha256))
    out: dict[str, ModelInfo] = {}
    for row in rows:
        ckpts_sorted = sorted(by_model[row.id], key=lambda c: (c.step is None, c.step, c.label))
        out[row.name] = ModelInfo(
            row.name, row.architecture, row.source, dict(row.config or {}), tuple(ckpts_sorted)
        )
    return out


def model_names(engine: Engine, first: int, after: str | None) -> tuple[list[str], bool]:
    """A page of catalogued model names in name order, and whether more follow."""
    with session_factory(engine)() as session:
        query = select(ModelRow.name).order_by(ModelRow.name).limit(first + 1)
        if after is not None:
            query = query.where(ModelRow.name > after)
        names = list(session.scalars(query).all())
    return names[:first], len(names) > first


def tasks_by_name(engine: Engine, names: list[str]) -> dict[str, TaskInfo]:
    """The catalogued tasks among ``names``."""
    with session_factory(engine)() as session:
        rows = session.scalars(select(TaskRow).where(TaskRow.name.in_(names))).all()
    return {r.name: TaskInfo(r.name, dict(r.spec or {})) for r in rows}


def task_names(engine: Engine, first: int, after: str | None) -> tuple[list[str], bool]:
    """A page of catalogued task names in name order, and whether more follow."""
    with session_factory(engine)() as session:
        query = select(TaskRow.name).order_by(TaskRow.name).limit(first + 1)
        if after is not None:
            query = query.where(TaskRow.name > after)
        names = list(session.scalars(query).all())
    return names[:first], len(names) > first
