"""The committed SDL (schema/registry.graphql) is exactly the code's schema."""

from __future__ import annotations

from circuitreg.services.api.graphql_api.schema import SDL_PATH, schema_sdl


def test_api_committed_sdl_matches_code() -> None:
    committed = SDL_PATH.read_text(encoding="utf-8")
    assert committed == schema_sdl(), (
        "schema/registry.graphql is stale: regenerate it with "
        "circuitreg.services.api.graphql_api.schema.export_sdl()"
    )


def test_api_sdl_has_the_documented_entry_points() -> None:
    sdl = schema_sdl()
    for name in (
        "circuit(id: String!): Circuit",
        "sharedSubcircuits(",
        "compareCircuits(",
        "circuitEvolution(",
        "componentUsage(",
        "motifSearch(",
        "submitDiscovery(",
        "importCircuit(",
        "jobProgress(",
        "type CircuitConnection",
    ):
        assert name in sdl, name
