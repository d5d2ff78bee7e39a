"""REST: download/upload in interchange formats, health, readiness, metrics, request ids."""

from __future__ import annotations

import json

import httpx
import networkx as nx

from circuitreg.schema import CircuitDocument

from .conftest import INDUCTION, Registry, error_messages, gql, make_doc


async def test_api_upload_then_download_round_trips(
    registry: Registry, writer: httpx.AsyncClient
) -> None:
    doc = make_doc(INDUCTION)
    created = await writer.post("/circuits?format=circuitreg", content=doc.to_json())
    assert created.status_code == 201, created.text
    assert created.json() == {"id": doc.id}
    detected = await writer.post("/circuits", content=doc.to_json())
    assert detected.json() == {"id": doc.id}
    registry.store.set_alias("best", doc.id)
    for ref in (doc.id, "best"):
        got = await writer.get(f"/circuits/{ref}.circuitreg")
        assert got.status_code == 200
        assert got.headers["content-disposition"] == f'attachment; filename="{doc.id}.json"'
        back = CircuitDocument.from_json(got.content)
        assert back.id == doc.id
    graphml = await writer.get(f"/circuits/{doc.id}.graphml")
    assert graphml.status_code == 200
    graph = nx.parse_graphml(graphml.text)
    assert graph.number_of_edges() == 3
    dot = await writer.get(f"/circuits/{doc.id}.dot")
    assert dot.status_code == 200 and dot.text.lstrip().startswith(("digraph", "strict digraph"))


async def test_api_refused_uploads_store_nothing(
    registry: Registry, writer: httpx.AsyncClient
) -> None:
    broken = json.loads(make_doc(INDUCTION).to_json())
    broken["edges"][0]["source"] = "a7.h9"
    bad = await writer.post("/circuits?format=circuitreg", content=json.dumps(broken))
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body"]
    assert bad.json()["detail"][0]["msg"].startswith("content: circuitreg: ")
    unknown = await writer.post("/circuits?format=excel", content=b"{}")
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"] == ["query", "format"]
    assert unknown.json()["detail"][0]["msg"].startswith("format: unknown format 'excel'")
    truncated = await writer.post("/circuits", content=make_doc(INDUCTION).to_json()[:50])
    assert truncated.status_code == 422
    empty = await writer.post("/circuits", content=b"")
    assert empty.status_code == 422
    listed = await gql(writer, "{ circuits { totalCount nodes { id } } }")
    assert listed["data"]["circuits"]["nodes"] == []


async def test_api_download_errors(registry: Registry, reader: httpx.AsyncClient) -> None:
    missing = await reader.get("/circuits/nope.circuitreg")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "no circuit with id or alias 'nope'"
    cid = registry.store.put_circuit(make_doc(INDUCTION))
    bad_format = await reader.get(f"/circuits/{cid}.xlsx")
    assert bad_format.status_code == 404
    assert bad_format.json()["detail"].startswith("unknown export format 'xlsx'")


async def test_api_graphql_import_circuit(registry: Registry, writer: httpx.AsyncClient) -> None:
    doc = make_doc(INDUCTION)
    query = """mutation($content: String!, $format: String) {
        importCircuit(content: $content, format: $format) { id nEdges } }"""
    stored = await gql(writer, query, content=doc.to_json(), format=None)
    assert stored["data"]["importCircuit"] == {"id": doc.id, "nEdges": 3}
    broken = await gql(writer, query, content=doc.to_json()[:-5], format="circuitreg")
    assert error_messages(broken)[0].startswith("content: circuitreg: ")
    assert registry.store.resolve(doc.id) == doc.id


async def test_api_health_ready_metrics_and_request_id(reader: httpx.AsyncClient) -> None:
    health = await reader.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = await reader.get("/readyz", headers={"X-Request-ID": "abc-123"})
    assert ready.json() == {"status": "ready", "store": "ok", "database": "ok"}
    assert ready.headers["x-request-id"] == "abc-123"
    generated = (await reader.get("/healthz")).headers["x-request-id"]
    assert len(generated) == 32
    await reader.post("/graphql", json={"query": "{ circuits { totalCount } }"})
    metrics = await reader.get("/metrics")
    assert metrics.status_code == 200
    assert (
        'circuitreg_http_requests_total{method="POST",route="/graphql",status="200"} 1.0'
        in metrics.text
    )


async def test_api_readyz_reports_an_unreachable_store(registry: Registry) -> None:
    registry.store.close()

    class Down:
        def ping(self) -> None:
            raise ConnectionError("graph database is down")

        def close(self) -> None:
            pass

    from circuitreg.services.api import create_app

    app = create_app(registry.settings, Down())  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        ready = await c.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "not ready",
        "store": "unreachable: ConnectionError",
        "database": "ok",
    }


async def test_api_cors_is_configurable(registry: Registry) -> None:
    app = registry.app(cors_origins=["https://lab.example"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        preflight = await c.options(
            "/graphql",
            headers={
                "Origin": "https://lab.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "Authorization",
            },
        )
        other = await c.get("/healthz", headers={"Origin": "https://evil.example"})
    assert preflight.headers["access-control-allow-origin"] == "https://lab.example"
    assert "access-control-allow-origin" not in other.headers


async def test_api_mib_round_trip_keeps_dense_scores(
    registry: Registry, writer: httpx.AsyncClient
) -> None:
    from circuitreg.schema import Edge
    from circuitreg.services.interchange.formats import FORMATS

    base = make_doc(INDUCTION)
    outside = Edge.from_name("input->a1.h2<q>", score=0.125, in_circuit=False)
    doc = base.model_copy(update={"edges": (*base.edges, outside)})
    mib = FORMATS.get("mib").write(CircuitDocument.model_validate(doc.model_dump()))
    created = await writer.post(
        "/circuits?format=mib&model=toy&task=induction&method=eap", content=mib
    )
    assert created.status_code == 201, created.text
    cid = created.json()["id"]
    summary = registry.store.get_summary(cid)
    assert summary is not None and summary.n_edges == 3 and summary.dense_scores_uri
    back = await writer.get(f"/circuits/{cid}.mib")
    assert back.status_code == 200
    assert json.loads(back.content) == json.loads(mib)
