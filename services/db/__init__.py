"""Relational metadata: SQLAlchemy 2 typed models, one engine per process, sessions."""

from .base import Base, make_engine, session_factory
from .catalogue import ApiToken, CheckpointRow, DatasetRow, ModelRow, TaskRow

__all__ = [
    "ApiToken",
    "Base",
    "CheckpointRow",
    "DatasetRow",
    "ModelRow",
    "TaskRow",
    "make_engine",
    "session_factory",
]
