"""Shared fixtures: isolated settings per test, and the real PostgreSQL when configured.

PostgreSQL tests use ``CIRCUITREG_TEST_POSTGRES_URL`` (the README's test command sets it to
the local server). In CI (``CI=true``) a missing or unreachable server is an error, never a
skip, so the suite cannot go green without having exercised PostgreSQL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

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
