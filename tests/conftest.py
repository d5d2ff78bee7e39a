"""Shared fixtures: isolated settings per test, the real PostgreSQL and the real Neo4j.

PostgreSQL tests use ``CIRCUITREG_TEST_POSTGRES_URL`` (the README's test command sets it to
the local server). Neo4j tests use ``CIRCUITREG_NEO4J_URI`` when it is set, and otherwise a
Neo4j Community server that ``neo4j_server`` builds from Maven Central and starts once per
session (see tests/neo4j_server). In CI (``CI=true``) a missing or unreachable server is an
error, never a skip, so the suite cannot go green without having exercised both.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
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


def _local_neo4j() -> ModuleType:
    """tests/neo4j_server/local_neo4j.py, which bench/store_bench.py uses too."""
    spec = importlib.util.spec_from_file_location(
        "local_neo4j", NEO4J_SERVER_DIR / "local_neo4j.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


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
    local = _local_neo4j()
    try:
        server = local.start_local_neo4j(tmp_path_factory.mktemp("neo4j"))
    except local.Neo4jUnavailable as exc:
        _unavailable(str(exc))
    try:
        yield server.uri
    finally:
        server.stop()


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
