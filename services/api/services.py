"""The long-lived objects one API process shares: settings, graph store, database, queue.

``create_app`` builds one ``ApiServices``; routes reach it through typed dependencies and
GraphQL resolvers through the request context. Sync store and database calls run in the
thread pool (``call``) so the event loop never blocks on I/O.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio.to_thread
from sqlalchemy import Engine

from circuitreg.services.artifacts import ArtifactStore
from circuitreg.services.queue import JobQueue
from circuitreg.services.stores.types import GraphStore
from circuitreg.settings import Settings

from .auth import Principal

R = TypeVar("R")


class TokenCache:
    """Recently verified tokens, so a busy client does not cost a database read per request.

    Entries live ``ttl_seconds`` (a revoked token stops working within that time); unknown
    tokens are never cached. Touched only from the event loop, so it needs no lock. A dict
    with expiry times is all this needs, hence no caching library.
    """

    def __init__(self, ttl_seconds: float = 10.0, max_entries: int = 1024) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, token: str) -> Principal | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            del self._entries[token]
            return None
        return entry[1]

    def put(self, token: str, principal: Principal) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[token] = (time.monotonic() + self.ttl_seconds, principal)


@dataclass
class ApiServices:
    """Everything resolvers and routes need, created once per app."""

    settings: Settings
    store: GraphStore
    engine: Engine
    queue: JobQueue
    artifacts: ArtifactStore
    tokens: TokenCache = field(default_factory=TokenCache)

    async def call(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Run a blocking store, queue or database call in the worker thread pool."""
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
