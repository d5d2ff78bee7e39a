"""docker-compose.yml is proven with the real compose parser and kept in step with the code.

No Docker engine runs here, so ``docker compose config`` (or the Debian ``docker-compose``)
validates the file; the rest checks that what it runs exists in this codebase.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from circuitreg.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _compose_command() -> list[str]:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    pytest.fail(
        "neither `docker compose` nor `docker-compose` is installed (make test installs it)"
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    result = subprocess.run(
        [*_compose_command(), "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def test_compose_has_the_full_stack(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "neo4j", "postgres", "migrate", "api", "worker", "ray-head", "ray-worker",
    }  # fmt: skip


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service.get("image", "")
        assert ":" in image and not image.endswith(":latest"), f"{name}: unpinned image {image!r}"
    assert compose["services"]["neo4j"]["image"].split(":")[1].startswith("5.")
    assert compose["services"]["neo4j"]["image"].endswith("-community")


def test_neo4j_image_is_the_version_ci_tests(compose: dict[str, Any]) -> None:
    """The deployment runs the Neo4j that tests/neo4j_server builds and the suite runs."""
    import xml.etree.ElementTree as ET

    pom = ET.parse(ROOT / "tests" / "neo4j_server" / "pom.xml")
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    tested = pom.findtext("m:properties/m:neo4j.version", namespaces=ns)
    assert compose["services"]["neo4j"]["image"] == f"neo4j:{tested}-community"


def test_long_running_services_have_health_checks_and_wait_on_health(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name in ("neo4j", "postgres", "api", "worker", "ray-head"):
        assert "healthcheck" in services[name], name
    for name in ("api", "worker", "migrate"):
        for dep, cond in services[name]["depends_on"].items():
            expected = "service_completed_successfully" if dep == "migrate" else "service_healthy"
            assert cond["condition"] == expected, (name, dep)


def test_worker_reserves_a_gpu(compose: dict[str, Any]) -> None:
    for name in ("worker", "ray-worker"):
        devices = compose["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"], name


def test_workers_reach_the_ray_head(compose: dict[str, Any]) -> None:
    address = compose["services"]["worker"]["environment"]["CIRCUITREG_RAY_ADDRESS"]
    head = compose["services"]["ray-head"]["command"]
    assert address == "ray://ray-head:10001" and "--ray-client-server-port=10001" in head
    joined = compose["services"]["ray-worker"]["command"]
    assert "--address=ray-head:6379" in joined and "--port=6379" in head


def test_environment_names_real_settings(compose: dict[str, Any]) -> None:
    fields = {f"CIRCUITREG_{name.upper()}" for name in Settings.model_fields}
    for name, service in compose["services"].items():
        for key in service.get("environment", {}):
            if key.startswith("CIRCUITREG_"):
                assert key in fields, f"{name}: {key} is not a setting"


def test_commands_are_real_cli_commands(compose: dict[str, Any]) -> None:
    from typer.main import get_command

    from circuitreg.cli import app

    group = get_command(app)
    commands = set(getattr(group, "commands", {}))
    for name, service in compose["services"].items():
        command = service.get("command")
        if command and command[0] == "circuitreg":
            assert command[1] in commands, f"{name}: `circuitreg {command[1]}` does not exist"
