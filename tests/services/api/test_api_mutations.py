"""Mutations: jobs, tags, aliases, labels; refused inputs name the field and write nothing."""

from __future__ import annotations

import httpx
import pytest

from circuitreg.services.db import make_engine
from circuitreg.services.queue import JobQueue

from .conftest import INDUCTION, Registry, error_messages, gql, make_doc

pytestmark = pytest.mark.graph_backends("embedded", "neo4j")

SUBMIT = """mutation($input: DiscoveryInput!) {
  submitDiscovery(input: $input) { id kind status progress model task method params } }"""


def _jobs(registry: Registry) -> int:
    engine = make_engine(registry.settings.resolved_database_url)
    try:
        return len(JobQueue(engine).list(first=500).items)
    finally:
        engine.dispose()


async def test_api_submit_discovery_dedupes_and_cancels(
    registry: Registry, writer: httpx.AsyncClient
) -> None:
    spec = {
        "model": "toy:induction-2l",
        "task": "induction",
        "method": "eap",
        "params": {"direction": "noising"},
    }
    first = (await gql(writer, SUBMIT, input=spec))["data"]["submitDiscovery"]
    again = (await gql(writer, SUBMIT, input=spec))["data"]["submitDiscovery"]
    assert first["id"] == again["id"]
    assert first["status"] == "QUEUED" and first["params"] == {"direction": "noising"}
    listed = await gql(writer, "{ jobs(status: QUEUED) { nodes { id } } }")
    assert listed["data"]["jobs"]["nodes"] == [{"id": first["id"]}]
    cancel = await gql(
        writer, "mutation($id: ID!) { cancelJob(id: $id) { status } }", id=first["id"]
    )
    assert cancel["data"]["cancelJob"]["status"] == "CANCELLED"
    job = await gql(
        writer, "query($id: ID!) { job(id: $id) { status events { event } } }", id=first["id"]
    )
    assert [e["event"] for e in job["data"]["job"]["events"]][-1] == "cancelled"
    unknown = await gql(writer, 'mutation { cancelJob(id: "nope") { status } }')
    assert error_messages(unknown) == ["id: no job with id 'nope'"]


async def test_api_refused_mutations_write_nothing(
    registry: Registry, writer: httpx.AsyncClient
) -> None:
    cid = registry.store.put_circuit(make_doc(INDUCTION))
    bad_params = await gql(
        writer, SUBMIT, input={"model": "m", "task": "t", "method": "eap", "params": [1, 2]}
    )
    assert error_messages(bad_params) == ["input.params: Input should be a valid dictionary"]
    blank = await gql(writer, SUBMIT, input={"model": " ", "task": "t", "method": "eap"})
    assert error_messages(blank) == ["input.model: must not be empty"]
    validation = await gql(
        writer,
        """mutation($input: ValidationInput!) { submitValidation(input: $input) { id } }""",
        input={"circuit": "missing", "model": "m", "task": "t"},
    )
    assert error_messages(validation) == ["input.circuit: no circuit with id or alias 'missing'"]
    assert _jobs(registry) == 0

    id_like = "c_0123456789abcdef0123456789abcdef"
    alias = await gql(
        writer, 'mutation($a: String!) { setAlias(alias: $a, circuit: "x") { id } }', a=id_like
    )
    assert error_messages(alias) == [
        "alias: must not look like a circuit id (c_ and 32 hex digits)"
    ]
    alias_to_nothing = await gql(
        writer, 'mutation { setAlias(alias: "best", circuit: "x") { id } }'
    )
    assert error_messages(alias_to_nothing) == ["circuit: no circuit with id or alias 'x'"]
    assert registry.store.resolve("best") is None
    label = await gql(
        writer,
        'mutation { annotateComponent(model: "toy", component: "a9", label: "x") { labels } }',
    )
    assert error_messages(label)[0].startswith("component: ")
    assert registry.store.component_labels("toy") == {}
    unknown_field = await gql(
        writer, 'mutation { tagCircuit(circuit: "x", tag: "t", colour: "red") { id } }'
    )
    assert error_messages(unknown_field) == [
        "Unknown argument 'colour' on field 'Mutation.tagCircuit'."
    ]
    assert registry.store.get_summary(cid).tags == ()  # type: ignore[union-attr]


async def test_api_alias_tag_and_annotate(registry: Registry, writer: httpx.AsyncClient) -> None:
    cid = registry.store.put_circuit(make_doc(INDUCTION))
    aliased = await gql(
        writer,
        'mutation($c: String!) { setAlias(alias: "canonical", circuit: $c) { id aliases } }',
        c=cid,
    )
    assert aliased["data"]["setAlias"] == {"id": cid, "aliases": ["canonical"]}
    tagged = await gql(
        writer, 'mutation { tagCircuit(circuit: "canonical", tag: "reviewed") { tags } }'
    )
    assert tagged["data"]["tagCircuit"]["tags"] == ["reviewed"]
    labelled = await gql(
        writer,
        'mutation { annotateComponent(model: "toy", component: "a1.h2",'
        ' label: "induction head") { model component labels } }',
    )
    assert labelled["data"]["annotateComponent"] == {
        "model": "toy",
        "component": "a1.h2",
        "labels": ["induction head"],
    }
    shown = await gql(
        writer,
        '{ circuit(id: "canonical") { components { nodes { name labels } } } }',
    )
    nodes = {n["name"]: n["labels"] for n in shown["data"]["circuit"]["components"]["nodes"]}
    assert nodes["a1.h2"] == ["induction head"]


async def test_api_lists_methods_and_refuses_unknown_ones(
    registry: Registry, writer: httpx.AsyncClient
) -> None:
    listed = await gql(writer, "{ methods { name options { name type default } } }")
    methods = {m["name"]: m for m in listed["data"]["methods"]}
    assert {"eap", "eap_ig", "acdc"} <= set(methods)
    assert "tau" in {o["name"] for o in methods["acdc"]["options"]}
    unknown = await gql(writer, SUBMIT, input={"model": "m", "task": "t", "method": "magic"})
    assert error_messages(unknown)[0].startswith("input.method: unknown method 'magic'")
    bad_option = await gql(
        writer, SUBMIT, input={"model": "m", "task": "t", "method": "acdc", "params": {"k": 5}}
    )
    assert error_messages(bad_option)[0].startswith("input.params: method 'acdc' takes no ['k']")
    assert _jobs(registry) == 0
