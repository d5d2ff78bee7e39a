"""GraphQL queries over the embedded store and a real Neo4j, through httpx's ASGI transport."""

from __future__ import annotations

import httpx
import pytest

from .conftest import INDUCTION, Registry, error_messages, gql, make_doc

pytestmark = pytest.mark.graph_backends("embedded", "neo4j")

CIRCUIT = """
query($id: String!) {
  circuit(id: $id) {
    id modelName taskName method checkpoint step nEdges nComponents tags aliases
    model { name catalogued }
    run { method ablation metric }
    edges(first: 2) { edges { cursor node { name source target receiver score } }
                      pageInfo { hasNextPage endCursor } totalCount }
    components { nodes { name kind layer head labels } }
  }
}
"""


async def test_api_circuit_by_id_and_alias(registry: Registry, reader: httpx.AsyncClient) -> None:
    cid = registry.store.put_circuit(make_doc(INDUCTION))
    registry.store.set_alias("canonical", cid)
    by_id = await gql(reader, CIRCUIT, id=cid)
    by_alias = await gql(reader, CIRCUIT, id="canonical")
    assert by_id == by_alias
    circuit = by_id["data"]["circuit"]
    assert circuit["id"] == cid and circuit["aliases"] == ["canonical"]
    assert circuit["nEdges"] == 3 and circuit["edges"]["totalCount"] == 3
    assert [e["node"]["name"] for e in circuit["edges"]["edges"]] == [
        "a0.h1->a1.h2<k>",
        "a1.h2->logits",
    ]
    assert circuit["edges"]["edges"][0]["node"]["receiver"] == "K"
    assert [c["name"] for c in circuit["components"]["nodes"]] == [
        "input",
        "a0.h1",
        "a1.h2",
        "logits",
    ]
    after = circuit["edges"]["pageInfo"]["endCursor"]
    rest = await gql(
        reader,
        "query($id: String!, $after: String) { circuit(id: $id) {"
        " edges(first: 5, after: $after) { nodes { name } pageInfo { hasNextPage } } } }",
        id=cid,
        after=after,
    )
    assert rest["data"]["circuit"]["edges"] == {
        "nodes": [{"name": "input->a0.h1<v>"}],
        "pageInfo": {"hasNextPage": False},
    }
    missing = await gql(reader, CIRCUIT, id="no-such-alias")
    assert missing["data"]["circuit"] is None


async def test_api_circuits_filter_and_cursor_pagination(
    registry: Registry, reader: httpx.AsyncClient
) -> None:
    ids = sorted(
        registry.store.put_circuit(make_doc(INDUCTION, seed=seed, method=method))
        for seed, method in [(s, "eap" if s % 2 else "acdc") for s in range(7)]
    )
    registry.store.tag(ids[0], "favourite")
    query = """query($first: Int!, $after: String, $f: CircuitFilterInput) {
      circuits(filter: $f, first: $first, after: $after) {
        edges { cursor node { id method } } pageInfo { hasNextPage endCursor } } }"""
    seen: list[str] = []
    after = None
    while True:
        page = (await gql(reader, query, first=3, after=after))["data"]["circuits"]
        seen.extend(e["node"]["id"] for e in page["edges"])
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == ids
    eap = (await gql(reader, query, first=50, f={"method": "eap"}))["data"]["circuits"]["edges"]
    assert len(eap) == 3 and {e["node"]["method"] for e in eap} == {"eap"}
    tagged = (await gql(reader, query, first=50, f={"tag": "favourite"}))["data"]["circuits"]
    assert [e["node"]["id"] for e in tagged["edges"]] == [ids[0]]


async def test_api_bad_arguments_name_the_field(reader: httpx.AsyncClient) -> None:
    too_many = await gql(reader, "{ circuits(first: 100000) { edges { cursor } } }")
    assert error_messages(too_many) == ["first: must be between 1 and 100, got 100000"]
    bad_cursor = await gql(reader, '{ circuits(after: "%%%") { edges { cursor } } }')
    assert error_messages(bad_cursor)[0].startswith("after: not a cursor")
    bad_range = await gql(
        reader, "{ circuits(filter: {minEdges: 5, maxEdges: 2}) { edges { cursor } } }"
    )
    assert error_messages(bad_range) == ["filter.minEdges: 5 is above maxEdges 2"]
    bad_component = await gql(
        reader, '{ componentUsage(model: "toy", component: "head7") { totalCount } }'
    )
    assert error_messages(bad_component)[0].startswith("component: ")


async def test_api_evolution_shared_and_compare(
    registry: Registry, reader: httpx.AsyncClient
) -> None:
    early = registry.store.put_circuit(make_doc([*INDUCTION[:2], "a0.h1->logits"], step=100))
    late = registry.store.put_circuit(make_doc(INDUCTION, step=200))
    evolution = await gql(
        reader,
        """{ circuitEvolution(model: "toy", task: "induction", method: "eap") {
            steps { nodes { step appeared disappeared circuit { id } } }
            edgeLifetimes(first: 10) { nodes { edge appearedAtStep disappearedAtStep } } } }""",
    )
    evo = evolution["data"]["circuitEvolution"]
    steps = evo["steps"]["nodes"]
    assert [s["step"] for s in steps] == [100, 200]
    assert steps[0]["circuit"]["id"] == early and steps[1]["circuit"]["id"] == late
    assert steps[1]["appeared"] == ["a1.h2->logits"]
    assert steps[1]["disappeared"] == ["a0.h1->logits"]
    lifetimes = {x["edge"]: x for x in evo["edgeLifetimes"]["nodes"]}
    assert lifetimes["a0.h1->logits"]["disappearedAtStep"] == 200
    assert lifetimes["a1.h2->logits"]["appearedAtStep"] == 200

    shared = await gql(
        reader,
        """query($ids: [String!]) { sharedSubcircuits(circuitIds: $ids, minSupport: 2) {
            circuitIds nEdges edges { nodes { edge support scores { circuitId score } } } } }""",
        ids=[early, late],
    )
    edges = shared["data"]["sharedSubcircuits"]["edges"]["nodes"]
    assert sorted(e["edge"] for e in edges) == ["a0.h1->a1.h2<k>", "input->a0.h1<v>"]
    assert all(e["support"] == 2 for e in edges)
    by_models = await gql(
        reader,
        """{ sharedSubcircuits(models: ["toy"], tasks: ["induction"], minSupport: 2) {
            nEdges } }""",
    )
    assert by_models["data"]["sharedSubcircuits"]["nEdges"] == 2
    too_much = await gql(
        reader,
        "query($ids: [String!]) { sharedSubcircuits(circuitIds: $ids, minSupport: 3) { nEdges } }",
        ids=[early, late],
    )
    assert error_messages(too_much) == ["minSupport: must be between 1 and 2 (circuits compared)"]

    compare = await gql(
        reader,
        """query($a: String!, $b: String!) { compareCircuits(a: $a, b: $b) {
            consistency { alignment edgeJaccard sharedEdges }
            onlyA { nodes } onlyB { nodes } both { totalCount } } }""",
        a=early,
        b=late,
    )
    result = compare["data"]["compareCircuits"]
    assert result["consistency"] == {
        "alignment": "canonical",
        "edgeJaccard": 0.5,
        "sharedEdges": 2,
    }
    assert result["onlyA"]["nodes"] == ["a0.h1->logits"]
    assert result["onlyB"]["nodes"] == ["a1.h2->logits"]
    assert result["both"]["totalCount"] == 2
    unknown = await gql(reader, '{ compareCircuits(a: "nope", b: "x") { both { totalCount } } }')
    assert error_messages(unknown) == ["a: no circuit with id or alias 'nope'"]


async def test_api_component_usage_and_motif_search(
    registry: Registry, reader: httpx.AsyncClient
) -> None:
    with_motif = registry.store.put_circuit(make_doc(INDUCTION))
    registry.store.put_circuit(make_doc(["input->a1.h2<q>", "a1.h2->logits"]))
    registry.store.label_component("toy", "a0.h1", "previous-token head")
    registry.store.label_component("toy", "a1.h2", "induction head")
    usage = await gql(
        reader,
        '{ componentUsage(model: "toy", component: "a0.h1") {'
        " totalCount nodes { degree circuit { id } } } }",
    )
    assert usage["data"]["componentUsage"]["nodes"] == [
        {"degree": 2, "circuit": {"id": with_motif}}
    ]
    motif = await gql(
        reader,
        """query($m: MotifInput!) { motifSearch(motif: $m) {
            nodes { circuitId bindings { variable component } } } }""",
        m={
            "nodes": [
                {"variable": "prev", "label": "previous-token head"},
                {"variable": "ind", "label": "induction head"},
            ],
            "edges": [{"source": "prev", "target": "ind", "receiver": "K"}],
            "model": "toy",
        },
    )
    assert motif["data"]["motifSearch"]["nodes"] == [
        {
            "circuitId": with_motif,
            "bindings": [
                [
                    {"variable": "ind", "component": "a1.h2"},
                    {"variable": "prev", "component": "a0.h1"},
                ]
            ],
        }
    ]
    bad = await gql(
        reader,
        """query($m: MotifInput!) { motifSearch(motif: $m) { totalCount } }""",
        m={"nodes": [{"variable": "x"}], "edges": [{"source": "x", "target": "y"}]},
    )
    assert error_messages(bad) == ["motif.edges[0].target: 'y' is not a variable of the motif"]


async def test_api_paths_and_circuits_with_edge(
    registry: Registry, reader: httpx.AsyncClient
) -> None:
    with_k = registry.store.put_circuit(make_doc(INDUCTION))
    registry.store.put_circuit(make_doc(["input->a1.h2<q>", "a1.h2->logits"]))
    body = await gql(
        reader,
        """query($id: String!) {
          circuit(id: $id) { paths(first: 5) }
          circuitsWithEdge(model: "toy", edge: "a0.h1->a1.h2<k>") { nodes { id } }
        }""",
        id=with_k,
    )
    assert body["data"]["circuit"]["paths"] == [["input", "a0.h1", "a1.h2", "logits"]]
    assert body["data"]["circuitsWithEdge"]["nodes"] == [{"id": with_k}]
    bad = await gql(
        reader, '{ circuitsWithEdge(model: "toy", edge: "a0.h1->a1.h2") { totalCount } }'
    )
    assert error_messages(bad)[0].startswith("edge: ")


async def test_api_models_and_tasks_from_the_catalogue(
    registry: Registry, reader: httpx.AsyncClient
) -> None:
    from circuitreg.services.db import (
        CheckpointRow,
        ModelRow,
        TaskRow,
        make_engine,
        session_factory,
    )

    engine = make_engine(registry.settings.resolved_database_url)
    with session_factory(engine)() as session:
        for name in ("gpt2-small", "toy"):
            session.add(ModelRow(name=name, architecture="gpt2", config={"n_layers": 2}))
        session.add(TaskRow(name="induction", spec={"seq_len": 8}))
        session.flush()
        toy = session.query(ModelRow).filter_by(name="toy").one()
        for step in (200, 100):
            session.add(CheckpointRow(model_id=toy.id, label=f"step-{step}", step=step))
        session.commit()
    engine.dispose()
    registry.store.put_circuit(make_doc(INDUCTION))
    body = await gql(
        reader,
        """{ models(first: 1) { nodes { name } pageInfo { hasNextPage endCursor } }
             tasks { nodes { name spec } }
             circuits { nodes { model { name architecture catalogued
                 checkpoints { nodes { label step } } } task { name catalogued } } }
             model(name: "unknown-model") { name catalogued } }""",
    )
    data = body["data"]
    assert data["models"]["nodes"] == [{"name": "gpt2-small"}]
    assert data["models"]["pageInfo"]["hasNextPage"] is True
    rest = await gql(
        reader,
        "query($a: String) { models(after: $a) { nodes { name } } }",
        a=data["models"]["pageInfo"]["endCursor"],
    )
    assert rest["data"]["models"]["nodes"] == [{"name": "toy"}]
    assert data["tasks"]["nodes"] == [{"name": "induction", "spec": {"seq_len": 8}}]
    circuit = data["circuits"]["nodes"][0]
    assert circuit["model"] == {
        "name": "toy",
        "architecture": "gpt2",
        "catalogued": True,
        "checkpoints": {
            "nodes": [{"label": "step-100", "step": 100}, {"label": "step-200", "step": 200}]
        },
    }
    assert circuit["task"] == {"name": "induction", "catalogued": True}
    assert data["model"] == {"name": "unknown-model", "catalogued": False}


SIMILAR = """query($c: String!, $first: Int, $aligned: Boolean) {
  similarCircuits(circuit: $c, first: $first, aligned: $aligned) {
    similarity circuit { id modelName } } }"""


async def test_api_similar_circuits_by_role_and_by_name(
    registry: Registry, reader: httpx.AsyncClient
) -> None:
    query = registry.store.put_circuit(make_doc(INDUCTION, score=1.0))
    near = registry.store.put_circuit(make_doc(INDUCTION[1:], score=1.0))
    # Another seed's model: the same mechanism on other heads.
    other_seed = ["input->a0.h3<v>", "a0.h3->a1.h0<k>", "a1.h0->logits"]
    other = registry.store.put_circuit(make_doc(other_seed, model="toy-seed1", score=1.0))
    registry.store.put_circuit(make_doc(["input->logits"]))  # shares nothing
    registry.store.set_alias("canonical", query)
    for model, prev, ind in (("toy", "a0.h1", "a1.h2"), ("toy-seed1", "a0.h3", "a1.h0")):
        registry.store.label_component(model, prev, "previous-token head")
        registry.store.label_component(model, ind, "induction head")
    aligned = await gql(reader, SIMILAR, c="canonical")
    assert aligned["data"]["similarCircuits"] == [
        {"similarity": pytest.approx(1.0), "circuit": {"id": other, "modelName": "toy-seed1"}},
        {"similarity": pytest.approx(2 / 6**0.5), "circuit": {"id": near, "modelName": "toy"}},
    ]
    by_name = await gql(reader, SIMILAR, c=query, aligned=False, first=5)
    assert [h["circuit"]["id"] for h in by_name["data"]["similarCircuits"]] == [near]
    compare = await gql(
        reader,
        """query($a: String!, $b: String!) { compareCircuits(a: $a, b: $b, alignment: "roles") {
            consistency { canonicalCosine roleAlignedCosine } } }""",
        a=query,
        b=other,
    )
    assert compare["data"]["compareCircuits"]["consistency"] == {
        "canonicalCosine": 0.0,
        "roleAlignedCosine": pytest.approx(1.0),
    }
    unknown = await gql(reader, SIMILAR, c="nope")
    assert error_messages(unknown) == ["circuit: no circuit with id or alias 'nope'"]
    too_many = await gql(reader, SIMILAR, c=query, first=1000)
    assert error_messages(too_many) == ["first: must be between 1 and 100, got 1000"]
