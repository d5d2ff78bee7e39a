"""schema/circuit.schema.json: generated from the models, never drifting, and usable."""

from __future__ import annotations

import json

import jsonschema
import pytest

from circuitreg.schema import CircuitDocument, Component, Edge, MethodRef, ModelRef, TaskRef
from circuitreg.services.interchange.schema_file import SCHEMA_PATH, render_json_schema


def test_schema_file_matches_the_code() -> None:
    assert SCHEMA_PATH.exists(), "run: circuitreg json-schema --write"
    assert SCHEMA_PATH.read_text(encoding="utf-8") == render_json_schema(), (
        "schema/circuit.schema.json is stale: run `circuitreg json-schema --write`"
    )


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _document() -> CircuitDocument:
    return CircuitDocument(
        model=ModelRef(name="gpt2", n_layers=1, n_heads=1),
        task=TaskRef(name="ioi"),
        method=MethodRef(name="acdc"),
        components=[Component.from_name(n) for n in ("input", "a0.h0", "logits")],
        edges=[Edge.from_name("input->a0.h0<v>", score=0.5), Edge.from_name("a0.h0->logits")],
    )


def test_documents_validate_against_the_schema(validator: jsonschema.protocols.Validator) -> None:
    validator.validate(json.loads(_document().to_json()))


def test_the_schema_rejects_what_the_models_reject(
    validator: jsonschema.protocols.Validator,
) -> None:
    data = json.loads(_document().to_json())
    wrong_format = {**data, "format": "circuitreg/0"}
    extra_field = {**data, "colour": "red"}
    bad_receiver = {**data, "edges": [{**data["edges"][0], "receiver": "x"}]}
    for bad in (wrong_format, extra_field, bad_receiver):
        assert not validator.is_valid(bad)
