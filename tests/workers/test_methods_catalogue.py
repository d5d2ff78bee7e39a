"""schema/methods.json, read by the torch-free API, is the registry exactly."""

from __future__ import annotations

from circuitreg.workers.methods.catalogue import CATALOGUE_PATH, catalogue, catalogue_json


def test_catalogue_file_matches_the_registry() -> None:
    assert CATALOGUE_PATH.read_text() == catalogue_json(), (
        "schema/methods.json is stale: run python -m circuitreg.workers.methods.catalogue"
    )


def test_catalogue_lists_every_method_with_its_options() -> None:
    names = [m["name"] for m in catalogue()]
    assert {"eap", "eap_ig", "acdc"} <= set(names)
    for method in catalogue():
        option_names = {o["name"] for o in method["options"]}
        assert {"ablation", "metric"} <= option_names, method["name"]
