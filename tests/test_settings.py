"""Settings: embedded defaults, environment overrides, and one clear line for a bad value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from circuitreg.settings import SettingsError, get_settings


def test_defaults_are_embedded_under_the_data_dir(tmp_path: Path) -> None:
    settings = get_settings()
    assert settings.graph_backend == "embedded"
    assert settings.resolved_database_url.startswith("sqlite:///")
    assert str(settings.data_dir) in settings.resolved_database_url
    assert settings.resolved_graph_database_url == settings.resolved_database_url
    assert settings.resolved_artifact_url.startswith(str(settings.data_dir))


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CIRCUITREG_DATA_DIR", str(tmp_path / "moved"))
    monkeypatch.setenv("CIRCUITREG_API_PORT", "9123")
    get_settings.cache_clear()
    settings = get_settings()
    assert settings.api_port == 9123
    assert str(tmp_path / "moved") in settings.resolved_database_url


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CIRCUITREG_API_PORT", "not-a-port"),
        ("CIRCUITREG_GRAPH_BACKEND", "mongodb"),
        ("CIRCUITREG_DATABASE_URL", "::::"),
    ],
)
def test_bad_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    get_settings.cache_clear()
    with pytest.raises(SettingsError) as err:
        get_settings()
    message = str(err.value)
    assert variable in message
    assert "\n" not in message


def test_bad_setting_stops_the_cli_with_one_line(tmp_path: Path) -> None:
    env = {"CIRCUITREG_API_PORT": "70000", "CIRCUITREG_DATA_DIR": str(tmp_path), "PATH": ""}
    result = subprocess.run(
        [sys.executable, "-m", "circuitreg", "migrate"], capture_output=True, text=True, env=env
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and "CIRCUITREG_API_PORT" in lines[0], result.stderr


def test_readme_configuration_table_lists_every_setting() -> None:
    from circuitreg.settings import settings_table_markdown

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("<!-- settings-table:start -->") + len("<!-- settings-table:start -->")
    end = readme.index("<!-- settings-table:end -->")
    assert readme[start:end].strip() == settings_table_markdown(), (
        "README configuration table is stale: regenerate it from settings_table_markdown()"
    )
