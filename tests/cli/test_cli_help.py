"""Help pages list choices and defaults, and flags carry no type label."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from circuitreg.cli import app
from circuitreg.services.interchange.formats import default_registry

COMMANDS = [
    ["discover"], ["validate"], ["import"], ["export"], ["heads"], ["token", "list"], ["demo"]
]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_pages_show_no_type_label_on_flags(command: list[str]) -> None:
    page = CliRunner().invoke(app, [*command, "--help"])
    assert page.exit_code == 0, page.output
    assert "<bool>" not in page.output and "load_model" not in page.output


def test_help_pages_list_formats_ablations_and_metrics() -> None:
    runner = CliRunner()
    export_page = runner.invoke(app, ["export", "--help"]).output
    for name in default_registry().writable():
        assert name in export_page
    import_page = runner.invoke(app, ["import", "--help"]).output
    assert all(name in import_page for name in default_registry().readable())
    discover_page = runner.invoke(app, ["discover", "--help"]).output
    assert "<resample|zero|mean>" in discover_page
    assert "<logit_diff|prob|kl|cosine>" in discover_page
    assert "[default: resample]" in runner.invoke(app, ["validate", "--help"]).output


def test_a_format_that_does_not_exist_is_refused_with_the_choices(tmp_path: object) -> None:
    result = CliRunner().invoke(app, ["export", "c_x", "--format", "pdf", "--out", "x.pdf"])
    assert result.exit_code == 2
    assert "unknown format 'pdf'; choose one of circuitreg, mib" in result.output
