"""Tokens and scopes, and query limits that refuse abusive queries before they run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from circuitreg.services.api import create_app

from .conftest import INDUCTION, CountingStore, Registry, error_messages, gql, make_doc

TAG = 'mutation($c: String!) { tagCircuit(circuit: $c, tag: "x") { tags } }'


async def test_api_writes_need_a_write_token(
    registry: Registry, client_for: Callable[..., httpx.AsyncClient]
) -> None:
    cid = registry.store.put_circuit(make_doc(INDUCTION))
    async with client_for(None, registry.app(anonymous_read=True)) as anonymous:
        refused = await gql(anonymous, TAG, c=cid)
        assert refused["data"] is None
        assert error_messages(refused) == [
            "an anonymous request lacks the 'write' scope this field needs"
        ]
        upload = await anonymous.post("/circuits?format=circuitreg", content=b"{}")
        assert upload.status_code == 401
    async with client_for("read") as reader:
        refused = await gql(reader, TAG, c=cid)
        assert error_messages(refused) == [
            "token 'read-token' lacks the 'write' scope this field needs"
        ]
        upload = await reader.post("/circuits?format=circuitreg", content=b"{}")
        assert upload.status_code == 403
    assert registry.store.get_summary(cid).tags == ()  # type: ignore[union-attr]
    async with client_for("write") as writer:
        accepted = await gql(writer, TAG, c=cid)
        assert accepted["data"]["tagCircuit"]["tags"] == ["x"]


async def test_api_reads_need_a_token_unless_anonymous_read(
    registry: Registry, client_for: Callable[..., httpx.AsyncClient]
) -> None:
    query = "{ circuits { edges { cursor } } }"
    async with client_for(None) as anonymous:
        body = await gql(anonymous, query)
        assert error_messages(body) == [
            "an anonymous request lacks the 'read' scope this field needs"
        ]
        download = await anonymous.get("/circuits/anything.circuitreg")
        assert download.status_code == 401
    async with client_for(None, registry.app(anonymous_read=True)) as anonymous:
        assert (await gql(anonymous, query))["data"] == {"circuits": {"edges": []}}


async def test_api_bad_or_unknown_tokens_are_401(registry: Registry) -> None:
    transport = httpx.ASGITransport(app=registry.app())
    for header in ("Bearer crg_not-a-real-token", "Basic dXNlcjpwYXNz", "Bearer"):
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers={"Authorization": header}
        ) as client:
            response = await client.post("/graphql", json={"query": "{ circuits { totalCount } }"})
            assert response.status_code == 401, header
            assert response.headers["www-authenticate"] == "Bearer"


async def test_api_admin_creates_tokens_and_writer_cannot(
    registry: Registry, client_for: Callable[..., httpx.AsyncClient]
) -> None:
    create = 'mutation { createToken(name: "ci", scope: "read") { name scope token } }'
    async with client_for("write") as writer:
        body = await gql(writer, create)
        assert "lacks the 'admin' scope" in error_messages(body)[0]
    async with client_for("admin") as admin:
        made = (await gql(admin, create))["data"]["createToken"]
        assert made["token"].startswith("crg_")
        again = await gql(admin, create)
        assert error_messages(again) == ["name: a token named 'ci' already exists"]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=registry.app()),
        base_url="http://t",
        headers={"Authorization": f"Bearer {made['token']}"},
    ) as new_reader:
        assert (await gql(new_reader, "{ circuits { totalCount } }"))["data"] is not None


def _nested(depth: int) -> str:
    inner = "id"
    for _ in range(depth):
        inner = f"job {{ circuit {{ {inner} }} }}"
    return f'{{ circuit(id: "x") {{ {inner} }} }}'


async def _refused_without_store_calls(
    registry: Registry, query: str, **settings: Any
) -> list[str]:
    counting = CountingStore(registry.store)
    app = create_app(registry.settings.model_copy(update=settings), counting)  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {registry.tokens['read']}"},
    ) as client:
        body = await gql(client, query)
    assert body.get("data") is None
    assert counting.total == 0, counting.calls
    return error_messages(body)


async def test_api_deep_query_is_refused_before_it_runs(registry: Registry) -> None:
    errors = await _refused_without_store_calls(registry, _nested(8), max_query_depth=12)
    assert errors and "exceeds maximum operation depth of 12" in errors[0]


async def test_api_aliased_query_is_refused_before_it_runs(registry: Registry) -> None:
    aliases = " ".join(f'c{i}: circuit(id: "x{i}") {{ id }}' for i in range(16))
    errors = await _refused_without_store_calls(registry, f"{{ {aliases} }}", max_aliases=15)
    assert errors == ["16 aliases found. Allowed: 15"]


async def test_api_huge_query_is_refused_by_token_count(registry: Registry) -> None:
    fields = " ".join(["id"] * 400)
    errors = await _refused_without_store_calls(
        registry, f'{{ circuit(id: "x") {{ {fields} }} }}', max_query_tokens=200
    )
    assert errors == ["Syntax Error: Document contains more than 200 tokens. Parsing aborted."]


def test_api_token_cache_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    from circuitreg.services.api import services as services_module
    from circuitreg.services.api.auth import Principal, Scope
    from circuitreg.services.api.services import TokenCache

    now = [100.0]
    monkeypatch.setattr(services_module.time, "monotonic", lambda: now[0])
    cache = TokenCache(ttl_seconds=10)
    who = Principal(name="w", scope=Scope.WRITE)
    cache.put("crg_x", who)
    assert cache.get("crg_x") == who and cache.get("crg_y") is None
    now[0] += 10.5
    assert cache.get("crg_x") is None
