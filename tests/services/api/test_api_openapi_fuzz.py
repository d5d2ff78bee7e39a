"""Schemathesis drives the REST part from its OpenAPI document: no 5xx, responses conform.

The upload body is a file in any of several formats, checked by the importers rather than
by the OpenAPI schema (which only says "an object or bytes"), so the check that every
schema-valid body is accepted does not apply and is left out; all others run.
Each operation's hypothesis strategy is run directly (``as_strategy``) rather than through
schemathesis' pytest plugin, whose collection hook does not work with pytest 9.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from .conftest import INDUCTION, Registry, make_doc


def test_api_rest_conforms_to_its_openapi(registry: Registry) -> None:
    cid = registry.store.put_circuit(make_doc(INDUCTION))
    registry.store.set_alias("canonical", cid)
    schema = schemathesis.openapi.from_asgi("/openapi.json", registry.app())
    headers = {"Authorization": f"Bearer {registry.tokens['write']}"}
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()
        tested.append(f"{operation.method.upper()} {operation.path}")

        @given(case=operation.as_strategy())
        @settings(
            max_examples=8,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

        check()
    assert "POST /circuits" in tested and "GET /circuits/{circuit_ref}.{fmt}" in tested
