"""Shared fixtures: isolated settings per test, the real PostgreSQL and the real Neo4j.

PostgreSQL tests use ``CIRCUITREG_TEST_POSTGRES_URL`` (the README's test command sets it to
the local server). Neo4j tests use ``CIRCUITREG_NEO4J_URI`` when it is set, and otherwise a
Neo4j Community server that ``neo4j_server`` builds from Maven Central and starts once per
session (see tests/neo4j_server). In CI (``CI=true``) a missing or unreachable server is an
error, never a skip, so the suite cannot go green without having exercised both.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from circuitreg.services.stores.cypher import CypherStore

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"
MIB_IOI = SHARED_DIR / "data" / "mib" / "ioi-eap-ig.json"


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test gets its own data directory and a fresh settings cache."""
    from circuitreg.settings import get_settings

    for key in list(os.environ):
        if key.startswith("CIRCUITREG_") and key not in (
            "CIRCUITREG_TEST_POSTGRES_URL",
            "CIRCUITREG_NEO4J_URI",
            "CIRCUITREG_NEO4J_USER",
            "CIRCUITREG_NEO4J_PASSWORD",
        ):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CIRCUITREG_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _postgres_base_url() -> str | None:
    return os.environ.get("CIRCUITREG_TEST_POSTGRES_URL")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL schema-less database URL: a new database per test, dropped after."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = _postgres_base_url()
    if not base:
        if os.environ.get("CI"):
            pytest.fail("CIRCUITREG_TEST_POSTGRES_URL is not set in CI")
        pytest.skip("CIRCUITREG_TEST_POSTGRES_URL not set (the README's test command sets it)")
    name = f"circuitreg_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - depends on the machine
        admin.dispose()
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {base} unreachable in CI: {exc}")
        pytest.skip(f"PostgreSQL at {base} unreachable: {exc}")
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :n AND pid <> pg_backend_pid()"
                ),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on SQLite and on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.sqlite'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def mib_ioi_path() -> Path:
    """The real MIB circuit from ../shared; skipped with the reason in a user's clone."""
    if not MIB_IOI.exists():
        pytest.skip(f"shared data not present at {MIB_IOI} (it is beside the checkout in CI)")
    return MIB_IOI


NEO4J_SERVER_DIR = Path(__file__).resolve().parent / "neo4j_server"
NEO4J_HOW_TO = (
    "install Java 17 and Maven (tests/neo4j_server builds Neo4j Community from Maven Central), "
    "or run `docker compose up neo4j` and set CIRCUITREG_NEO4J_URI=bolt://127.0.0.1:7687"
)


def _unavailable(reason: str) -> None:
    """Skip on a user's machine; fail in CI, where every Neo4j case must run."""
    if os.environ.get("CI"):
        pytest.fail(f"Neo4j is required in CI: {reason}")
    pytest.skip(f"no Neo4j: {reason}; to run these tests, {NEO4J_HOW_TO}")


def _build_neo4j_launcher() -> list[str]:
    """``mvn package`` the launcher once (skipped while its jar is newer than its sources)."""
    target = NEO4J_SERVER_DIR / "target"
    jar = target / "neo4j-test-server-0.1.0.jar"
    sources = [NEO4J_SERVER_DIR / "pom.xml", *NEO4J_SERVER_DIR.glob("src/**/*.java")]
    stale = not jar.exists() or jar.stat().st_mtime < max(p.stat().st_mtime for p in sources)
    if stale or not (target / "classpath.txt").exists():
        built = subprocess.run(
            ["mvn", "-q", "-B", "package"], cwd=NEO4J_SERVER_DIR, capture_output=True, text=True
        )
        if built.returncode != 0:
            _unavailable(f"mvn package in {NEO4J_SERVER_DIR} failed:\n{built.stdout[-3000:]}")
    classpath = (target / "classpath.txt").read_text().strip()
    return ["-cp", f"{jar}{os.pathsep}{classpath}", "circuitreg.testserver.Launcher"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_bolt(uri: str, process: subprocess.Popen[str], timeout_s: float) -> None:
    from neo4j import GraphDatabase

    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            _unavailable(f"the Neo4j launcher exited with {process.returncode}")
        try:
            with GraphDatabase.driver(uri, auth=("neo4j", "")) as driver:
                driver.verify_connectivity()
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                _unavailable(f"Bolt at {uri} did not answer in {timeout_s:.0f} s: {exc}")
            time.sleep(0.5)


@pytest.fixture(scope="session")
def neo4j_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Bolt URI of a real Neo4j for the session: the configured one, or one we start.

    The server runs until its standard input closes, so it stops with the session even if
    pytest is killed. Tests share it and wipe what they write (see the store fixtures).
    """
    configured = os.environ.get("CIRCUITREG_NEO4J_URI")
    if configured:
        yield configured
        return
    java, mvn = shutil.which("java"), shutil.which("mvn")
    if not java or not mvn:
        _unavailable("java or mvn is not on PATH")
    command = [str(java), "-Xmx1g", "-XX:+UseSerialGC", *_build_neo4j_launcher()]
    home = tmp_path_factory.mktemp("neo4j")
    uri = f"bolt://127.0.0.1:{_free_port()}"
    log = (home / "launcher.log").open("w")
    process = subprocess.Popen(
        [*command, str(home), uri.rsplit(":", 1)[1]],
        stdin=subprocess.PIPE,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for_bolt(uri, process, timeout_s=120)
        yield uri
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung shutdown
            process.kill()
        log.close()


@pytest.fixture
def connect_neo4j(neo4j_uri: str) -> Callable[[], CypherStore]:
    """Open a store on the session's Neo4j (the credentials of the environment, if any)."""
    from circuitreg.services.stores.cypher import CypherStore, Neo4jSession

    def connect() -> CypherStore:
        return CypherStore(
            Neo4jSession.connect(
                neo4j_uri,
                user=os.environ.get("CIRCUITREG_NEO4J_USER", "neo4j"),
                password=os.environ.get("CIRCUITREG_NEO4J_PASSWORD", ""),
            )
        )

    return connect


@pytest.fixture
def empty_neo4j(neo4j_uri: str, connect_neo4j: Callable[[], CypherStore]) -> str:
    """The session's Neo4j with every node deleted: a test that writes through the settings
    (the CLI, the demo, a worker process) starts from an empty registry."""
    store = connect_neo4j()
    try:
        store.wipe()
    finally:
        store.close()
    return neo4j_uri


@pytest.fixture(params=["embedded", "neo4j"])
def settings_graph_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test once on the default embedded store and once with the process settings on
    the real Neo4j (``CIRCUITREG_GRAPH_BACKEND=neo4j``), as a deployment configures it."""
    from circuitreg.settings import get_settings

    backend = str(request.param)
    if backend == "neo4j":
        monkeypatch.setenv("CIRCUITREG_GRAPH_BACKEND", "neo4j")
        monkeypatch.setenv("CIRCUITREG_NEO4J_URI", request.getfixturevalue("empty_neo4j"))
        get_settings.cache_clear()
    return backend
