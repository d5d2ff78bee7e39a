"""Positions through GraphQL (issue 18): a circuit's axis, its edges and components by
position and span, and where a head or an edge is at a position, on both store kinds."""

from __future__ import annotations

import httpx
import pytest

from circuitreg.schema import CircuitDocument, Component, Edge, MethodRef, ModelRef, TaskRef
from circuitreg.schema.circuit import PositionAxis

from .conftest import INDUCTION, Registry, error_messages, gql, make_doc

pytestmark = pytest.mark.graph_backends("embedded", "neo4j")

AXIS = PositionAxis(
    mode="spans",
    labels=("S1", "S2", "END", "other"),
    indices=(1, 3, None, None),
    tokens=("When", " John", " and", " John", " went"),
)
SUMMED = {"input->a0.h1<v>": 1.0, "a0.h1->a1.h2<k>": 0.75, "a1.h2->logits": 2.0}
AT = {
    ("input->a0.h1<v>", 1, "S1"): 0.5,
    ("a0.h1->a1.h2<k>", 3, "S2"): 0.625,
    ("a0.h1->a1.h2<k>", None, "other"): 0.125,
    ("a1.h2->logits", None, "END"): 2.0,
}


def spans_doc() -> CircuitDocument:
    """An IOI-shaped positional circuit: summed edges plus the positional ones kept."""
    edges = [Edge.from_name(n, score=v) for n, v in SUMMED.items()]
    edges += [Edge.from_name(n, score=v, position=p, span=s) for (n, p, s), v in AT.items()]
    names = sorted({n for e in edges for n in (e.source, e.target)})
    comps = [Component.from_name(n) for n in names]
    comps.append(Component.from_name("a1.h2", span="END", score=1.5))
    return CircuitDocument(
        model=ModelRef(name="toy", n_layers=2, n_heads=4),
        task=TaskRef(name="ioi"),
        method=MethodRef(name="eap", params={"positions": "spans"}),
        components=tuple(comps),
        edges=tuple(edges),
        positions=AXIS,
    )


EDGES = """
query($id: String!, $span: String, $position: Int, $positional: Boolean, $component: String,
      $first: Int = 50, $after: String) {
  circuit(id: $id) {
    nEdges
    positions { mode labels indices tokens }
    edges(span: $span, position: $position, positional: $positional, component: $component,
          first: $first, after: $after) {
      totalCount nodes { name position span positional score }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""


def _names(body: dict[str, object]) -> list[tuple[str, int | None, str | None]]:
    nodes = body["data"]["circuit"]["edges"]["nodes"]  # type: ignore[index]
    return [(n["name"], n["position"], n["span"]) for n in nodes]


async def test_api_circuit_positions_and_edges_by_span(
    registry: Registry, reader: httpx.AsyncClient
) -> None:
    cid = registry.store.put_circuit(spans_doc())
    body = await gql(reader, EDGES, id=cid)
    circuit = body["data"]["circuit"]
    assert circuit["positions"] == {
        "mode": "spans",
        "labels": ["S1", "S2", "END", "other"],
        "indices": [1, 3, None, None],
        "tokens": ["When", " John", " and", " John", " went"],
    }
    assert circuit["nEdges"] == 3  # the summed circuit's size
    assert circuit["edges"]["totalCount"] == 7
    end = await gql(reader, EDGES, id=cid, span="END")
    assert _names(end) == [("a1.h2->logits", None, "END")]
    assert end["data"]["circuit"]["edges"]["nodes"][0]["positional"] is True
    head_s2 = await gql(reader, EDGES, id=cid, span="S2", component="a1.h2")
    assert _names(head_s2) == [("a0.h1->a1.h2<k>", 3, "S2")]
    at_3 = await gql(reader, EDGES, id=cid, position=3)
    assert _names(at_3) == _names(head_s2)
    summed = await gql(reader, EDGES, id=cid, positional=False)
    assert _names(summed) == [(n, None, None) for n in sorted(SUMMED)]
    positional = await gql(reader, EDGES, id=cid, positional=True, component="a0.h1")
    assert _names(positional) == [
        ("a0.h1->a1.h2<k>", None, "other"),
        ("a0.h1->a1.h2<k>", 3, "S2"),
        ("input->a0.h1<v>", 1, "S1"),
    ]


async def test_api_edges_page_through_positions_in_order(
    registry: Registry, reader: httpx.AsyncClient
) -> None:
    """Cursors keep name, position and span order: pages of two cover all seven edges."""
    cid = registry.store.put_circuit(spans_doc())
    seen: list[tuple[str, int | None, str | None]] = []
    after = None
    while True:
        body = await gql(reader, EDGES, id=cid, first=2, after=after)
        seen.extend(_names(body))
        page = body["data"]["circuit"]["edges"]["pageInfo"]
        if not page["hasNextPage"]:
            break
        after = page["endCursor"]
    everything = _names(await gql(reader, EDGES, id=cid))
    assert seen == everything and len(set(seen)) == 7
    assert everything[:3] == [
        ("a0.h1->a1.h2<k>", None, None),
        ("a0.h1->a1.h2<k>", None, "other"),
        ("a0.h1->a1.h2<k>", 3, "S2"),
    ]


async def test_api_components_by_span(registry: Registry, reader: httpx.AsyncClient) -> None:
    cid = registry.store.put_circuit(spans_doc())
    body = await gql(
        reader,
        """query($id: String!) { circuit(id: $id) {
          all: components { nodes { name position span score } }
          end: components(span: "END") { nodes { name span score } }
          summed: components(positional: false) { totalCount } } }""",
        id=cid,
    )
    circuit = body["data"]["circuit"]
    assert [(c["name"], c["span"]) for c in circuit["all"]["nodes"]] == [
        ("input", None),
        ("a0.h1", None),
        ("a1.h2", None),
        ("a1.h2", "END"),
        ("logits", None),
    ]
    assert circuit["end"]["nodes"] == [{"name": "a1.h2", "span": "END", "score": 1.5}]
    assert circuit["summed"]["totalCount"] == 4


async def test_api_where_a_head_and_an_edge_are_at_a_span(
    registry: Registry, reader: httpx.AsyncClient
) -> None:
    positional = registry.store.put_circuit(spans_doc())
    plain = registry.store.put_circuit(make_doc(INDUCTION))
    body = await gql(
        reader,
        """{
          s2: componentUsage(model: "toy", component: "a1.h2", span: "S2") {
            nodes { degree circuit { id } } }
          end: componentUsage(model: "toy", component: "a1.h2", span: "END") {
            nodes { degree circuit { id } } }
          anywhere: componentUsage(model: "toy", component: "a1.h2") { totalCount }
          atS1: circuitsWithEdge(model: "toy", edge: "input->a0.h1<v>", position: 1) {
            nodes { id } }
          atEnd: circuitsWithEdge(model: "toy", edge: "input->a0.h1<v>", span: "END") {
            totalCount }
        }""",
    )
    data = body["data"]
    assert data["s2"]["nodes"] == [{"degree": 1, "circuit": {"id": positional}}]
    assert data["end"]["nodes"] == [{"degree": 1, "circuit": {"id": positional}}]
    assert data["anywhere"]["totalCount"] == 2 and plain != positional
    assert data["atS1"]["nodes"] == [{"id": positional}]
    assert data["atEnd"]["totalCount"] == 0


async def test_api_position_filters_name_the_bad_argument(
    registry: Registry, reader: httpx.AsyncClient
) -> None:
    cid = registry.store.put_circuit(spans_doc())
    negative = await gql(reader, EDGES, id=cid, position=-1)
    assert error_messages(negative) == ["position: must be between 0 and 1000000, got -1"]
    empty = await gql(
        reader, '{ componentUsage(model: "toy", component: "a1.h2", span: " ") { totalCount } }'
    )
    assert error_messages(empty) == ["span: must not be empty"]
    contradiction = await gql(reader, EDGES, id=cid, span="END", positional=False)
    assert error_messages(contradiction)[0].startswith("positional: false selects summed")
    head = await gql(reader, EDGES, id=cid, span="END", component="head 2")
    assert error_messages(head)[0].startswith("component: ")
    unpositioned = registry.store.put_circuit(make_doc(INDUCTION))
    none = await gql(reader, EDGES, id=unpositioned, span="END")
    assert none["data"]["circuit"]["positions"] is None
    assert none["data"]["circuit"]["edges"]["totalCount"] == 0


async def test_api_download_says_what_a_format_leaves_out(
    registry: Registry, reader: httpx.AsyncClient
) -> None:
    cid = registry.store.put_circuit(spans_doc())
    mib = await reader.get(f"/circuits/{cid}.mib")
    assert mib.status_code == 200
    assert mib.headers["X-Circuitreg-Export-Note"].startswith(
        "mib has no token positions: the export holds the circuit's 3 summed edges; its 4 "
        "positional edges and 1 positional components are left out"
    )
    assert set(mib.json()["edges"]) == set(SUMMED)
    native = await reader.get(f"/circuits/{cid}.circuitreg")
    assert native.status_code == 200 and "X-Circuitreg-Export-Note" not in native.headers
    assert CircuitDocument.from_json(native.content) == registry.store.get_circuit(cid)
