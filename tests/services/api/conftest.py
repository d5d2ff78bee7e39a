"""Fixtures of the API tests: a migrated registry, tokens, sample circuits, clients.

The registry's circuit store is the embedded one unless a module asks for more with
``pytestmark = pytest.mark.graph_backends("embedded", "neo4j")``: its tests then run once
per backend, with the same assertions (the real Neo4j of the ``neo4j_uri`` fixture).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from circuitreg.migrations.relational import upgrade
from circuitreg.schema import CircuitDocument, Component, Edge, MethodRef, ModelRef, TaskRef
from circuitreg.services.api import create_app
from circuitreg.services.api.auth import create_token
from circuitreg.services.db import make_engine
from circuitreg.services.stores.embedded import EmbeddedStore
from circuitreg.services.stores.types import GraphStore
from circuitreg.settings import Settings


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``graph_backend`` by the module's ``graph_backends`` marker."""
    marker = metafunc.definition.get_closest_marker("graph_backends")
    if "graph_backend" in metafunc.fixturenames:
        backends = list(marker.args) if marker else ["embedded"]
        metafunc.parametrize("graph_backend", backends, indirect=True)


@pytest.fixture
def graph_backend(request: pytest.FixtureRequest) -> str:
    """The circuit store backend of this test's registry."""
    return str(request.param)


def open_graph_store(
    backend: str, settings: Settings, request: pytest.FixtureRequest
) -> GraphStore:
    """A fresh, migrated store of ``backend`` (Neo4j is wiped: the server is shared)."""
    if backend == "embedded":
        store: GraphStore = EmbeddedStore(settings.resolved_graph_database_url)
    elif backend == "neo4j":
        request.getfixturevalue("empty_neo4j")
        store = request.getfixturevalue("connect_neo4j")()
    else:  # pragma: no cover - a marker naming an unknown backend
        raise ValueError(f"unknown graph backend {backend!r}")
    store.migrate()
    return store


def make_doc(
    edges: list[str],
    *,
    model: str = "toy",
    task: str = "induction",
    method: str = "eap",
    step: int | None = None,
    score: float = 0.5,
    seed: int | None = None,
) -> CircuitDocument:
    """A small valid circuit on a 2-layer, 4-head model whose components are its edges' ends."""
    parsed = [Edge.from_name(e, score=score) for e in edges]
    names = {n for e in parsed for n in (e.source, e.target)}
    return CircuitDocument(
        model=ModelRef(
            name=model,
            n_layers=2,
            n_heads=4,
            checkpoint=None if step is None else f"step-{step}",
            step=step,
        ),
        task=TaskRef(name=task),
        method=MethodRef(name=method),
        seed=seed,
        components=tuple(Component.from_name(n) for n in sorted(names)),
        edges=tuple(parsed),
    )


INDUCTION = ["input->a0.h1<v>", "a0.h1->a1.h2<k>", "a1.h2->logits"]


@dataclass
class Registry:
    """A migrated registry: settings, the store, and one token per scope."""

    settings: Settings
    store: GraphStore
    tokens: dict[str, str]

    def app(self, **overrides: Any) -> FastAPI:
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        return create_app(settings, self.store)


@pytest.fixture
def registry(
    tmp_path: Path, graph_backend: str, request: pytest.FixtureRequest
) -> Iterator[Registry]:
    settings = Settings(data_dir=tmp_path / "data")
    upgrade(settings.resolved_database_url)
    store = open_graph_store(graph_backend, settings, request)
    engine = make_engine(settings.resolved_database_url)
    tokens = {
        scope: create_token(engine, f"{scope}-token", scope) for scope in ("read", "write", "admin")
    }
    engine.dispose()
    yield Registry(settings, store, tokens)
    store.close()


@pytest.fixture
def client_for(registry: Registry) -> Callable[..., httpx.AsyncClient]:
    """An httpx client on the app through the ASGI transport (no server, no sockets)."""

    def build(scope: str | None = "read", app: FastAPI | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {registry.tokens[scope]}"} if scope else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app or registry.app()),
            base_url="http://api.test",
            headers=headers,
        )

    return build


@pytest.fixture
async def reader(client_for: Callable[..., httpx.AsyncClient]) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for("read") as client:
        yield client


@pytest.fixture
async def writer(client_for: Callable[..., httpx.AsyncClient]) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for("write") as client:
        yield client


async def gql(client: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    """POST a GraphQL operation and return the decoded JSON body (data and errors)."""
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def error_messages(body: dict[str, Any]) -> list[str]:
    return [e["message"] for e in body.get("errors") or []]


class CountingStore:
    """Wraps a real store and counts calls per method (for N+1 and "never ran" checks)."""

    def __init__(self, inner: GraphStore) -> None:
        self._inner = inner
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if not callable(target):
            return target

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return target(*args, **kwargs)

        return counted

    @property
    def total(self) -> int:
        return sum(self.calls.values())
