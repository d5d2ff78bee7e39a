"""Size and cost limits: a request body over its limit is a 413 with a message naming the
setting; a fragment fan-out bomb is refused by the cost limit before any resolver runs; both
leave the store untouched, and legitimate queries (introspection included) pass."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import httpx
from graphql import get_introspection_query

from circuitreg.services.api import create_app

from .conftest import INDUCTION, CountingStore, Registry, error_messages, gql, make_doc

MiB = 1_048_576


def _fan_out_bomb(levels: int) -> str:
    """A short, shallow query whose fragments double at each of ``levels`` levels."""
    fragments = ["fragment F0 on Circuit { id }"]
    fragments += [f"fragment F{i} on Circuit {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, 17)]
    return f'query Bomb {{ circuit(id: "x") {{ ...F{levels} }} }} ' + " ".join(
        fragments[: levels + 1]
    )


def _counting_client(
    registry: Registry, scope: str, **settings: object
) -> tuple[httpx.AsyncClient, CountingStore]:
    counting = CountingStore(registry.store)
    app = create_app(registry.settings.model_copy(update=settings), counting)  # type: ignore[arg-type]
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://api.test",
        headers={"Authorization": f"Bearer {registry.tokens[scope]}"},
    )
    return client, counting


async def test_api_a_large_graphql_body_is_413_naming_the_setting(registry: Registry) -> None:
    client, counting = _counting_client(registry, "write")
    async with client:
        big_query = await client.post(
            "/graphql", json={"query": "{ circuits { totalCount } }" + " " * 2 * MiB}
        )
        assert big_query.status_code == 413
        detail = big_query.json()["detail"]
        assert detail.startswith(f"the request body ({len(big_query.request.content)} bytes)")
        assert f"limit of {MiB} bytes (CIRCUITREG_MAX_REQUEST_BYTES)" in detail
        assert "go to POST /circuits" in detail
        variables = {"content": "x" * 20 * MiB}
        big_variables = await client.post(
            "/graphql",
            json={
                "query": "mutation($content: String!) { importCircuit(content: $content) { id } }",
                "variables": variables,
            },
        )
        assert big_variables.status_code == 413
    assert counting.total == 0, counting.calls


async def test_api_a_chunked_body_is_cut_off_at_the_limit(registry: Registry) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"query": "{ circuits { totalCount } }", "pad": "'
        for _ in range(64):  # 4 MiB in 64 KiB chunks, no Content-Length
            sent += 1
            yield b"x" * 65_536
        yield b'"}'

    client, counting = _counting_client(registry, "read")
    async with client:
        response = await client.post(
            "/graphql", content=chunks(), headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 413
    assert response.json()["detail"].startswith("the request body is larger than the limit")
    assert counting.total == 0


async def test_api_the_limit_is_configurable_and_uploads_have_their_own(
    registry: Registry,
) -> None:
    doc = make_doc(INDUCTION)
    padded = doc.to_json().encode() + b" " * (MiB + 10)  # valid JSON larger than 1 MiB
    client, _ = _counting_client(registry, "write")
    async with client:
        accepted = await client.post("/circuits?format=circuitreg", content=padded)
        assert accepted.status_code == 201, accepted.text
        assert accepted.json() == {"id": doc.id}
    other = make_doc(INDUCTION, task="other")
    small, _ = _counting_client(registry, "write", max_request_bytes=2048, max_upload_bytes=4096)
    async with small:
        query = {"query": "{ circuits { totalCount } }", "pad": "y" * 3000}
        refused = await small.post("/graphql", json=query)
        assert refused.status_code == 413
        assert "limit of 2048 bytes" in refused.json()["detail"]
        fits = await small.post("/graphql", json={"query": "{ circuits { nodes { id } } }"})
        assert fits.json()["data"]["circuits"]["nodes"] == [{"id": doc.id}]
        too_big = await small.post(
            "/circuits?format=circuitreg", content=other.to_json().encode() + b" " * 5000
        )
        assert too_big.status_code == 413
        assert "limit of 4096 bytes (CIRCUITREG_MAX_UPLOAD_BYTES)" in too_big.json()["detail"]
    assert registry.store.resolve(other.id) is None


async def test_api_a_fragment_fan_out_bomb_is_refused_before_it_runs(
    registry: Registry,
) -> None:
    client, counting = _counting_client(registry, "read")
    async with client:
        body = await gql(client, _fan_out_bomb(16))
        assert body.get("data") is None
        assert error_messages(body) == [
            "operation 'Bomb' selects 65537 fields once fragments are expanded; "
            "the limit is 2000 (CIRCUITREG_MAX_QUERY_COST)"
        ]
        assert counting.total == 0, counting.calls
        small_bomb = await gql(client, _fan_out_bomb(4))  # 17 fields: under the limit, runs
        assert "errors" not in small_bomb and small_bomb["data"] == {"circuit": None}
    tight, _ = _counting_client(registry, "read", max_query_cost=10)
    async with tight:
        assert "the limit is 10" in error_messages(await gql(tight, _fan_out_bomb(4)))[0]


async def test_api_introspection_and_real_queries_pass_the_cost_limit(
    registry: Registry, client_for: Callable[..., httpx.AsyncClient]
) -> None:
    registry.store.put_circuit(make_doc(INDUCTION))
    async with client_for("read") as reader:
        introspected = await gql(reader, get_introspection_query(descriptions=True))
        assert "errors" not in introspected, introspected.get("errors")
        assert introspected["data"]["__schema"]["queryType"]["name"] == "Query"
        listed = await gql(
            reader,
            "{ circuits { totalCount nodes { id nEdges model { name } task { name } "
            "edges(first: 10) { edges { node { source target score } } } } } }",
        )
    assert "errors" not in listed, json.dumps(listed)[:500]
    (node,) = listed["data"]["circuits"]["nodes"]
    assert node["nEdges"] == 3 and len(node["edges"]["edges"]) == 3
