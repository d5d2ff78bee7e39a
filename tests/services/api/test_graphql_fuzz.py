"""Hostile input as a test: a seeded, bounded fuzz of the GraphQL API over the real app.

hypothesis-graphql builds queries AND mutations from the app's own SDL (``schema_sdl()``),
both schema-valid ones and ones with one schema violation (``Mode.NEGATIVE``); string
arguments are drawn from the registry's real vocabulary (stored circuit ids, an alias,
component and edge names, format names, whole documents for ``importCircuit``) as well as
random text, so that generated operations reach the resolvers and the store. Each is POSTed
to the FastAPI app holding a store with circuits, with a write token. For every example:

* no HTTP 5xx, and no Python traceback text in the body;
* the body is a GraphQL response: a JSON object with ``data`` and/or ``errors`` (a list of
  objects with a string ``message``) and nothing else but ``extensions``;
* no error is the masked "internal error" (an unexpected exception in a resolver);
* a mutation whose every root field was refused (or that never ran: parse and validation
  errors) leaves the registry unchanged: the circuit store's and the relational database's
  row counts, the circuits' tags, aliases and sizes, and the job counts per status.

Hand-written hostile requests (invalid syntax, huge integers, deep nesting, unknown fields,
wrong variable types, null bytes, bodies that are not GraphQL requests) get the same checks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import graphql
import hypothesis_graphql
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, inspect, select, table

from circuitreg.services.api.graphql_api.schema import schema_sdl
from circuitreg.services.db import make_engine
from circuitreg.services.interchange import write_document
from circuitreg.services.stores.types import CircuitFilter

from .conftest import INDUCTION, Registry, make_doc

SDL = schema_sdl()
_PARSED = graphql.build_schema(SDL)
ROOT_FIELDS = [
    *(_PARSED.query_type.fields if _PARSED.query_type else ()),
    *(_PARSED.mutation_type.fields if _PARSED.mutation_type else ()),
]
OTHER = ["input->a0.h0<q>", "a0.h0->a1.h3<k>", "a1.h3->logits"]

# --- the registry under fuzz ----------------------------------------------------------------


class Fuzzed:
    """The app over a store with circuits, a client with a write token, and a fingerprint."""

    def __init__(self, registry: Registry) -> None:
        store = registry.store
        self.ids = [
            store.put_circuit(make_doc(INDUCTION)),
            store.put_circuit(make_doc(OTHER, task="ioi", method="acdc", seed=1)),
            store.put_circuit(make_doc(INDUCTION, step=100, score=0.25)),
            store.put_circuit(make_doc([*INDUCTION[:2], "a1.h2->logits"], step=200)),
        ]
        store.tag(self.ids[0], "seed-tag")
        store.set_alias("best", self.ids[0])
        store.label_component("toy", "a0.h1", "previous-token head")
        self.registry = registry
        self.app: FastAPI = registry.app()
        urls = {
            registry.settings.resolved_database_url,
            registry.settings.resolved_graph_database_url,
        }
        self.engines: list[Engine] = [make_engine(url) for url in sorted(urls)]
        self.tables = [
            (engine, sorted(inspect(engine).get_table_names())) for engine in self.engines
        ]

    def fingerprint(self) -> tuple[Any, ...]:
        counts = []
        for engine, names in self.tables:
            with engine.connect() as conn:
                counts += [
                    (name, conn.execute(select(func.count()).select_from(table(name))).scalar())
                    for name in names
                ]
        page = self.registry.store.list_circuits(CircuitFilter(), first=100_000)
        circuits = tuple(
            (s.id, s.n_components, s.n_edges, s.tags, s.aliases, s.faithfulness) for s in page.items
        )
        jobs = self.app.state.services.queue.stats()
        return tuple(counts), circuits, tuple(sorted(jobs.items()))

    def close(self) -> None:
        for engine in self.engines:
            engine.dispose()


@pytest.fixture
def fuzzed(registry: Registry) -> Iterator[Fuzzed]:
    made = Fuzzed(registry)
    yield made
    made.close()


@pytest.fixture
def client(fuzzed: Fuzzed, registry: Registry) -> Iterator[TestClient]:
    headers = {"Authorization": f"Bearer {registry.tokens['write']}"}
    with TestClient(fuzzed.app, headers=headers, raise_server_exceptions=False) as made:
        yield made


# --- what every response must be ------------------------------------------------------------

TRACEBACK_MARKS = ("Traceback", 'File "')


def _root_keys(query: str) -> tuple[str | None, list[str]]:
    """The operation type and its root response keys, or (None, []) if it does not parse."""
    try:
        document = graphql.parse(query)
    except graphql.GraphQLError:
        return None, []
    operations = [d for d in document.definitions if isinstance(d, graphql.OperationDefinitionNode)]
    if len(operations) != 1:
        return None, []
    operation = operations[0]
    keys = [
        (s.alias or s.name).value
        for s in operation.selection_set.selections
        if isinstance(s, graphql.FieldNode)
    ]
    return operation.operation.value, keys


def check_response(response: Any, request: str) -> dict[str, Any]:
    """The checks every GraphQL response gets; returns the decoded body."""
    text = response.text
    assert response.status_code < 500, (request, response.status_code, text)
    for mark in TRACEBACK_MARKS:
        assert mark not in text, (request, text)
    body = response.json()
    assert isinstance(body, dict), (request, text)
    assert body.keys() <= {"data", "errors", "extensions"}, (request, text)
    assert "data" in body or "errors" in body, (request, text)
    errors = body.get("errors")
    if errors is not None:
        assert isinstance(errors, list) and errors, (request, text)
        for error in errors:
            assert isinstance(error, dict) and isinstance(error.get("message"), str), text
            assert error["message"] != "internal error", (request, text)
    else:
        assert body.get("data") is not None, (request, text)
    return body


def post_and_check(
    fuzzed: Fuzzed, client: TestClient, query: str, variables: Any = None, **extra: Any
) -> dict[str, Any]:
    """POST an operation; check the response, and that a refused mutation wrote nothing."""
    before = fuzzed.fingerprint()
    payload: dict[str, Any] = {"query": query, **extra}
    if variables is not None:
        payload["variables"] = variables
    body = check_response(client.post("/graphql", json=payload), query)
    kind, keys = _root_keys(query)
    errors = body.get("errors") or []
    refused = {
        e["path"][0] for e in errors if isinstance(e.get("path"), list) and len(e["path"]) == 1
    }
    never_ran = bool(errors) and body.get("data") is None and not any(e.get("path") for e in errors)
    if kind != "mutation" or never_ran or set(keys) <= refused:
        assert fuzzed.fingerprint() == before, (query, body)
    return body


# --- strategies -----------------------------------------------------------------------------


def _imports() -> list[str]:
    """Whole documents for importCircuit: new circuits in each text format, and bad ones."""
    new = make_doc(["input->a0.h2<q>", "a0.h2->logits"], model="toy-import", task="fuzz")
    texts = [write_document(new, fmt).decode() for fmt in ("circuitreg", "mib", "acdc", "graphml")]
    return [*texts, "{}", "[]", "[" * 5000, '{"a": ' + "1" * 5000 + "}", "<graphml", "\x00"]


VOCABULARY = [
    "best",
    "toy",
    "toy-import",
    "induction",
    "ioi",
    "eap",
    "acdc",
    "a0.h1",
    "a1.h2",
    "input",
    "logits",
    "m0",
    "a9.h9",
    "input->a0.h1<v>",
    "a0.h1->a1.h2<k>",
    "a1.h2->logits",
    "circuitreg",
    "mib",
    "graphml",
    "auto-circuit",
    "neuronpedia",
    "dot",
    "yaml",
    "auto",
    "canonical",
    "relative_depth",
    "roles",
    "resample",
    "zero",
    "logit_diff",
    "kl",
    "read",
    "write",
    "admin",
    "step-100",
    "seed-tag",
    "c_0123456789abcdef0123456789abcdef",
    "",
    " ",
    "\x00",
    "x" * 2000,
    "é\u202e",
    "' OR 1=1 --",
    "MATCH (n) DETACH DELETE n",
    "../../etc/passwd",
]
JSON_KEYS = st.sampled_from(["steps", "direction", "top_k", "seed", "n", "batch_size", "x"])
JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)


def _value_node(value: Any) -> graphql.ValueNode:
    """A GraphQL literal for a JSON value."""
    if value is None:
        return graphql.NullValueNode()
    if isinstance(value, bool):
        return graphql.BooleanValueNode(value=value)
    if isinstance(value, int):
        return graphql.IntValueNode(value=str(value))
    if isinstance(value, float):
        return graphql.FloatValueNode(value=repr(value))
    if isinstance(value, str):
        return graphql.StringValueNode(value=value)
    if isinstance(value, list):
        return graphql.ListValueNode(values=tuple(_value_node(v) for v in value))
    return graphql.ObjectValueNode(
        fields=tuple(
            graphql.ObjectFieldNode(name=graphql.NameNode(value=k), value=_value_node(v))
            for k, v in value.items()
        )
    )


def operations(ids: list[str]) -> st.SearchStrategy[str]:
    """Valid and one-violation queries and mutations, strings drawn from the registry's words."""
    known = st.sampled_from([*ids, *VOCABULARY])
    texts = st.one_of(known, known, known, st.sampled_from(_imports()), st.text(max_size=16))
    strings = texts.map(lambda s: graphql.StringValueNode(value=s))
    json_values = st.recursive(
        JSON_LEAVES,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(JSON_KEYS, inner, max_size=3),
        max_leaves=8,
    ).map(_value_node)
    small = st.integers(0, 25)
    ints = st.one_of(small, small, st.integers(-(2**31), 2**31 - 1))
    scalars: dict[str, st.SearchStrategy[Any]] = {  # each draws graphql value nodes
        "String": strings,
        "Int": ints.map(lambda n: graphql.IntValueNode(value=str(n))),
        "JSON": json_values,
    }
    negative = hypothesis_graphql.Mode.NEGATIVE
    # One root field at a time for the most part: an operation of several non-null fields
    # fails as a whole when any one does, and then no mutation would ever get through.
    single = [
        hypothesis_graphql.from_schema(SDL, fields=[name], custom_scalars=scalars)
        for name in ROOT_FIELDS
    ]
    return st.one_of(
        st.one_of(single),
        st.one_of(single),
        hypothesis_graphql.from_schema(SDL, custom_scalars=scalars),
        hypothesis_graphql.from_schema(SDL, custom_scalars=scalars, mode=negative),
    )


# --- the fuzz -------------------------------------------------------------------------------


def test_fuzzed_queries_and_mutations_fail_cleanly_and_refusals_write_nothing(
    fuzzed: Fuzzed, client: TestClient
) -> None:
    @settings(
        max_examples=200,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )
    @given(query=operations(fuzzed.ids))
    @example(query='mutation { importCircuit(content: "{\\"a\\": ' + "1" * 5000 + '}") { id } }')
    def run(query: str) -> None:
        note(f"query: {query!r}")
        post_and_check(fuzzed, client, query)

    run()


# --- hand-written hostile requests ----------------------------------------------------------

CIRCUIT = "query($id: String!) { circuit(id: $id) { id nEdges } }"
PAGE = "query($n: Int!) { circuits(first: $n) { nodes { id } } }"
TAG = "mutation($c: String!, $t: String!) { tagCircuit(circuit: $c, tag: $t) { tags } }"
IMPORT = """mutation($content: String!, $format: String) {
  importCircuit(content: $content, format: $format) { id } }"""


def _nested(depth: int) -> str:
    inner = "id"
    for _ in range(depth):
        inner = f"job {{ circuit {{ {inner} }} }}"
    return f'{{ circuit(id: "best") {{ {inner} }} }}'


HOSTILE: list[tuple[str, str, Any]] = [
    # invalid syntax
    ("unclosed", "{ circuits { nodes { id }", None),
    ("only braces", "}}}}", None),
    ("missing argument value", "{ circuit(id: ) { id } }", None),
    ("two anonymous operations", "{ methods { name } } { methods { name } }", None),
    ("unterminated string", '{ circuit(id: "best) { id } }', None),
    ("brace flood", "{" * 20_000, None),
    ("selection flood", "{ a " * 5_000, None),
    # huge and out-of-range integers
    ("int beyond 32 bits", "{ circuits(first: 99999999999999999999) { nodes { id } } }", None),
    ("int of 5000 digits", "{ circuits(first: " + "9" * 5000 + ") { nodes { id } } }", None),
    ("negative page", "{ circuits(first: -1) { nodes { id } } }", None),
    ("zero page", "{ circuits(first: 0) { nodes { id } } }", None),
    ("huge page variable", PAGE, {"n": 2**31}),
    ("huge float", "{ circuits(filter: {minFaithfulness: 1e999}) { nodes { id } } }", None),
    ("huge minSupport", "{ sharedSubcircuits(minSupport: 2147483647) { nEdges } }", None),
    ("huge paths", '{ circuit(id: "best") { paths(first: 2147483647) } }', None),
    (
        "huge priority",
        'mutation { submitDiscovery(input: {model: "toy", task: "induction", method: "eap", '
        "priority: 2147483647}) { id } }",
        None,
    ),
    # deep nesting, aliases
    ("deep selection", _nested(30), None),
    ("alias flood", "{ " + " ".join(f"a{i}: methods {{ name }}" for i in range(200)) + " }", None),
    ("fragment cycle", "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }", None),
    # unknown fields, types and operations
    ("unknown field", "{ nope }", None),
    ("unknown mutation", "mutation { dropTables }", None),
    ("unknown argument", '{ circuit(id: "best", drop: true) { id } }', None),
    ("introspection of a missing type", '{ __type(name: "Nope") { name } }', None),
    ("unknown enum", "{ jobs(status: EXPLODED) { nodes { id } } }", None),
    # wrong variable types
    ("string for Int", PAGE, {"n": "ten"}),
    ("float for Int", PAGE, {"n": 1.5}),
    ("object for String", CIRCUIT, {"id": {"$ne": None}}),
    ("null for String!", CIRCUIT, {"id": None}),
    ("missing variable", CIRCUIT, {}),
    ("undeclared variable", "{ circuit(id: $id) { id } }", {"id": "best"}),
    (
        "JSON params not an object",
        'mutation { submitDiscovery(input: {model: "m", task: "t", method: "eap", '
        "params: [1, 2]}) { id } }",
        None,
    ),
    # null bytes and odd text
    ("null byte in a literal", '{ circuit(id: "\\u0000") { id } }', None),
    ("raw null byte in the source", '{ circuit(id: "a\x00b") { id } }', None),
    ("null byte in a variable", CIRCUIT, {"id": "best\x00"}),
    ("lone surrogate escape", '{ circuit(id: "\\ud800") { id } }', None),
    ("bidi override", CIRCUIT, {"id": "\u202ebest"}),
    # mutations that must be refused without writing
    ("tag of a missing circuit", TAG, {"c": "nope", "t": "x"}),
    ("empty tag", TAG, {"c": "best", "t": "   "}),
    ("overlong tag", TAG, {"c": "best", "t": "x" * 100_000}),
    (
        "alias that looks like an id",
        'mutation { setAlias(alias: "c_0123456789abcdef0123456789abcdef", circuit: "best") '
        "{ id } }",
        None,
    ),
    (
        "label of a bad component",
        'mutation { annotateComponent(model: "toy", component: "a0.h-1", label: "x") { labels } }',
        None,
    ),
    ("token without admin", 'mutation { createToken(name: "x", scope: "admin") { token } }', None),
    ("import of nothing", IMPORT, {"content": ""}),
    ("import of deep JSON", IMPORT, {"content": "[" * 100_000}),
    ("import of a huge int", IMPORT, {"content": '{"a": ' + "1" * 5000 + "}"}),
    ("import of NaN scores", IMPORT, {"content": "NAN-DOC", "format": "circuitreg"}),
    ("import as unknown format", IMPORT, {"content": "{}", "format": "yaml"}),
    ("import as export-only format", IMPORT, {"content": "digraph {}", "format": "dot"}),
    ("import of a billion laughs", IMPORT, {"content": "LAUGHS", "format": "graphml"}),
    (
        "second of two mutations refused",
        'mutation { a: tagCircuit(circuit: "nope", tag: "x") { tags } '
        'b: tagCircuit(circuit: "gone", tag: "y") { tags } }',
        None,
    ),
]


def _resolve(variables: Any) -> Any:
    """Fill in the large documents the table names by placeholder."""
    if not isinstance(variables, dict):
        return variables
    content = variables.get("content")
    if content == "NAN-DOC":
        text = write_document(make_doc(INDUCTION, model="toy-nan"), "circuitreg").decode()
        variables = {**variables, "content": text.replace('"score":0.5', '"score":NaN', 1)}
    elif content == "LAUGHS":
        entities = "".join(
            f"<!ENTITY a{i + 1} '{(f'&a{i};' if i else '&a;') * 10}'>" for i in range(8)
        )
        variables = {
            **variables,
            "content": f"<?xml version='1.0'?><!DOCTYPE g [<!ENTITY a 'aaaaaaaaaa'>{entities}]>"
            "<graphml><graph><node id='&a8;'/></graph></graphml>",
        }
    return variables


# Well-formed requests that may legitimately succeed (a lookup finding nothing is null).
MAY_SUCCEED = {
    "huge priority",
    "introspection of a missing type",
    "null byte in a literal",
    "raw null byte in the source",
    "null byte in a variable",
    "bidi override",
}


def test_hand_written_hostile_operations_fail_cleanly(fuzzed: Fuzzed, client: TestClient) -> None:
    failures = []
    for name, query, variables in HOSTILE:  # one registry for all: each setup costs a second
        try:
            body = post_and_check(fuzzed, client, query, _resolve(variables))
            assert name in MAY_SUCCEED or body.get("errors"), body
        except AssertionError as exc:
            failures.append(f"{name}: {str(exc)[:500]}")
    assert not failures, "\n".join(failures)


def test_huge_int_literal_is_a_validation_error_not_an_internal_one(
    fuzzed: Fuzzed, client: TestClient
) -> None:
    body = post_and_check(
        fuzzed, client, "{ circuits(first: " + "9" * 5000 + ") { nodes { id } } }"
    )
    assert body["data"] is None
    assert body["errors"][0]["message"].startswith("Expected value of type 'Int'")


def test_nan_import_is_refused_by_name(fuzzed: Fuzzed, client: TestClient) -> None:
    body = post_and_check(fuzzed, client, IMPORT, _resolve({"content": "NAN-DOC"}))
    assert [e["message"] for e in body["errors"]] == [
        "content: circuitreg: at document edges[0] ('input->a0.h1<v>').score: "
        "expected a finite number, got nan"
    ]


JSON_TYPE = {"Content-Type": "application/json"}
A_QUERY = "{ methods { name } }"
NAN_BODY = json.dumps({"query": PAGE, "variables": {"n": float("nan")}}).encode()
SUBSCRIBE = 'subscription { jobProgress(id: "x") { id } }'
# (name, method, keyword arguments of the client's request)
BAD_BODIES: list[tuple[str, str, dict[str, Any]]] = [
    ("empty query", "POST", {"json": {"query": ""}}),
    ("variables as a list", "POST", {"json": {"query": CIRCUIT, "variables": [1, 2]}}),
    ("variables as a string", "POST", {"json": {"query": CIRCUIT, "variables": "id=best"}}),
    # strawberry ran a subscription POSTed as JSON like a query: "internal error" (fixed)
    ("subscription over POST", "POST", {"json": {"query": SUBSCRIBE}}),
    ("not JSON", "POST", {"content": b"{nope", "headers": JSON_TYPE}),
    ("not UTF-8", "POST", {"content": b"\xff\xfe{}", "headers": JSON_TYPE}),
    ("a JSON list", "POST", {"json": [{"query": A_QUERY}]}),
    ("query not a string", "POST", {"json": {"query": 5}}),
    ("query null", "POST", {"json": {"query": None}}),
    ("no query", "POST", {"json": {"variables": {}}}),
    ("operationName not a string", "POST", {"json": {"query": A_QUERY, "operationName": 3}}),
    (
        "unknown operationName",
        "POST",
        {"json": {"query": "query A { methods { name } }", "operationName": "B"}},
    ),
    ("NaN in the JSON body", "POST", {"content": NAN_BODY, "headers": JSON_TYPE}),
    ("form body", "POST", {"data": {"query": A_QUERY}}),
    (
        "GET with a query",
        "GET",
        {"params": {"query": A_QUERY}, "headers": {"Accept": "application/json"}},
    ),
]


def test_requests_that_are_not_graphql_fail_cleanly(fuzzed: Fuzzed, client: TestClient) -> None:
    """Refused (4xx as text or JSON, or a GraphQL response with errors), never a 5xx."""
    before = fuzzed.fingerprint()
    failures = []
    for name, method, request in BAD_BODIES:
        response = client.request(method, "/graphql", **request)
        text = response.text
        if response.status_code >= 500 or any(m in text for m in TRACEBACK_MARKS):
            failures.append(f"{name}: {response.status_code} {text[:300]}")
        elif response.headers.get("content-type", "").startswith("application/json"):
            body = response.json()
            if not (isinstance(body, dict) and body.keys() & {"errors", "detail"}):
                failures.append(f"{name}: {text[:300]}")
    assert not failures, "\n".join(failures)
    assert fuzzed.fingerprint() == before
