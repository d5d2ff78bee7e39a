"""The same API on the production relational database: PostgreSQL for store, tokens and queue."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from circuitreg.migrations.relational import upgrade
from circuitreg.services.api import create_app
from circuitreg.services.api.auth import create_token
from circuitreg.services.db import make_engine
from circuitreg.services.stores.embedded import EmbeddedStore
from circuitreg.settings import Settings

from .conftest import INDUCTION, error_messages, gql, make_doc


@pytest.mark.postgres
async def test_api_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=postgres_url)
    upgrade(postgres_url)
    store = EmbeddedStore(settings.resolved_graph_database_url)
    store.migrate()
    engine = make_engine(postgres_url)
    token = create_token(engine, "pg-writer", "write")
    engine.dispose()
    cid = store.put_circuit(make_doc(INDUCTION))
    app = create_app(settings, store)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://t",
            headers={"Authorization": f"Bearer {token}"},
        ) as client:
            tagged = await gql(
                client,
                'mutation($c: String!) { tagCircuit(circuit: $c, tag: "pg") { id tags } }',
                c=cid,
            )
            assert tagged["data"]["tagCircuit"] == {"id": cid, "tags": ["pg"]}
            job = await gql(
                client,
                'mutation { submitDiscovery(input: {model: "m", task: "t", method: "eap"})'
                " { id status } }",
            )
            assert job["data"]["submitDiscovery"]["status"] == "QUEUED"
            listed = await gql(client, '{ circuits(filter: {tag: "pg"}) { nodes { id } } }')
            assert listed["data"]["circuits"]["nodes"] == [{"id": cid}]
            bad = await gql(client, '{ jobs(after: "bm9wZQ==") { totalCount } }')
            assert error_messages(bad) == ["after: unknown cursor 'nope': no job has this id"]
            ready = await client.get("/readyz")
            assert ready.json()["status"] == "ready"
    finally:
        app.state.services.engine.dispose()
        store.close()
