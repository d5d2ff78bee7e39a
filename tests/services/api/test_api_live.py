"""The API over real sockets: a uvicorn server on the loopback, the ``gql`` client over HTTP,
and the ``jobProgress`` subscription over graphql-transport-ws while a "worker" (the real queue
calls a worker makes) claims, reports progress and completes the job."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport

from circuitreg.services.db import make_engine
from circuitreg.services.queue import JobQueue

from .conftest import INDUCTION, Registry, make_doc


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def server(registry: Registry) -> Iterator[str]:
    """A uvicorn server on a free loopback port, in a thread; yields its base URL."""
    port = _free_port()
    config = uvicorn.Config(registry.app(), host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if uv.started:
            break
        threading.Event().wait(0.02)
    assert uv.started, "uvicorn did not start"
    yield f"127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=10)


def _auth(registry: Registry, scope: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {registry.tokens[scope]}"}


async def test_api_gql_client_over_http(registry: Registry, server: str) -> None:
    cid = registry.store.put_circuit(make_doc(INDUCTION))
    transport = HTTPXAsyncTransport(
        url=f"http://{server}/graphql", headers=_auth(registry, "write")
    )
    async with Client(transport=transport, fetch_schema_from_transport=False) as session:
        result: dict[str, Any] = await session.execute(
            GraphQLRequest(
                'mutation($c: String!) { setAlias(alias: "live", circuit: $c) { id } }',
                variable_values={"c": cid},
            )
        )
        assert result == {"setAlias": {"id": cid}}
        got = await session.execute(
            GraphQLRequest('{ circuit(id: "live") { id nEdges edges { nodes { name } } } }')
        )
        assert got["circuit"]["nEdges"] == 3
        with pytest.raises(TransportQueryError, match="first: must be between 1 and 100"):
            await session.execute(GraphQLRequest("{ circuits(first: 0) { totalCount } }"))


async def test_api_job_progress_subscription(registry: Registry, server: str) -> None:
    transport = HTTPXAsyncTransport(
        url=f"http://{server}/graphql", headers=_auth(registry, "write")
    )
    async with Client(transport=transport) as session:
        job = await session.execute(
            GraphQLRequest(
                'mutation { submitDiscovery(input: {model: "toy", task: "induction",'
                ' method: "eap"}) { id } }'
            )
        )
    job_id = job["submitDiscovery"]["id"]
    engine = make_engine(registry.settings.resolved_database_url)
    queue = JobQueue(engine)

    async def worker() -> None:
        await asyncio.sleep(0.3)
        claimed = await asyncio.to_thread(queue.claim, "test-worker", 30.0)
        assert claimed is not None and claimed.id == job_id
        await asyncio.sleep(0.7)
        await asyncio.to_thread(queue.heartbeat, job_id, "test-worker", 0.5, "half way")
        await asyncio.sleep(0.7)
        await asyncio.to_thread(queue.complete, job_id, "test-worker", {"circuit_id": "c_x"})

    ws = WebsocketsTransport(
        url=f"ws://{server}/graphql",
        init_payload=_auth(registry, "read"),  # as a browser sends it: no headers on WS
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
    )
    updates: list[tuple[str, float, str | None]] = []
    task = asyncio.create_task(worker())
    async with Client(transport=ws) as session:
        request = GraphQLRequest(
            "subscription($id: ID!) { jobProgress(id: $id) { status progress message } }",
            variable_values={"id": job_id},
        )
        async for update in session.subscribe(request):
            p = update["jobProgress"]
            updates.append((p["status"], p["progress"], p["message"]))
    await task
    engine.dispose()
    statuses = [u[0] for u in updates]
    assert statuses[0] == "QUEUED" and statuses[-1] == "SUCCEEDED"
    assert "RUNNING" in statuses
    assert ("RUNNING", 0.5, "half way") in updates


async def test_api_subscription_needs_a_token(registry: Registry, server: str) -> None:
    for payload, message in (
        ({}, "an anonymous request lacks the 'read' scope"),
        (
            {"Authorization": "Bearer crg_wrong"},
            "unknown or revoked API token in the connection payload",
        ),
    ):
        ws = WebsocketsTransport(
            url=f"ws://{server}/graphql",
            init_payload=payload,
            subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
        )
        async with Client(transport=ws) as session:
            request = GraphQLRequest('subscription { jobProgress(id: "x") { status } }')
            with pytest.raises(TransportQueryError, match=message):
                async for _ in session.subscribe(request):
                    pass
