"""Hypothesis fuzzes GraphQL inputs: random schema-valid queries and mutations (built by
hypothesis-graphql from the exported SDL) never crash a resolver; every error is one a
client can read, never the masked "internal error"."""

from __future__ import annotations

from typing import Any

import hypothesis_graphql
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from circuitreg.services.api.graphql_api.schema import schema_sdl

from .conftest import INDUCTION, Registry, make_doc

SDL = schema_sdl()


def _post(client: TestClient, query: str) -> dict[str, Any]:
    response = client.post("/graphql", json={"query": query})
    assert response.status_code == 200, (query, response.text)
    body: dict[str, Any] = response.json()
    return body


def _check(body: dict[str, Any], query: str) -> None:
    for error in body.get("errors") or []:
        assert error["message"] != "internal error", query


def test_api_fuzzed_queries_and_mutations_fail_cleanly(registry: Registry) -> None:
    registry.store.put_circuit(make_doc(INDUCTION))
    app = registry.app()
    headers = {"Authorization": f"Bearer {registry.tokens['write']}"}
    skip_fields = ["createToken", "jobProgress"]
    query_fields = [
        "circuit", "circuits", "sharedSubcircuits", "compareCircuits", "circuitEvolution",
        "componentUsage", "motifSearch", "model", "models", "tasks", "job", "jobs",
        "circuitsWithEdge",
    ]  # fmt: skip
    mutation_fields = [
        "submitValidation", "cancelJob", "tagCircuit", "setAlias", "annotateComponent",
        "importCircuit",
    ]  # fmt: skip
    strategy = hypothesis_graphql.queries(SDL, fields=query_fields) | hypothesis_graphql.mutations(
        SDL, fields=mutation_fields
    )
    assert not set(skip_fields) & set(query_fields + mutation_fields)

    with TestClient(app, headers=headers) as client:

        @given(query=strategy)
        @settings(
            max_examples=20,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        def run(query: str) -> None:
            _check(_post(client, query), query)

        run()
