"""``circuitreg token create`` and ``circuitreg serve`` (a real process on the loopback)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from sqlalchemy import select
from typer.testing import CliRunner

from circuitreg.cli import app
from circuitreg.services.api.auth import hash_token, lookup_token
from circuitreg.services.db import ApiToken, make_engine, session_factory
from circuitreg.settings import get_settings


def test_api_token_create_prints_once_and_stores_only_the_hash() -> None:
    runner = CliRunner()
    made = runner.invoke(app, ["token", "create", "ci-bot", "--scope", "write"])
    assert made.exit_code == 0, made.output
    token = made.output.strip()
    assert token.startswith("crg_")
    engine = make_engine(get_settings().resolved_database_url)
    with session_factory(engine)() as session:
        row = session.scalars(select(ApiToken).where(ApiToken.name == "ci-bot")).one()
    assert row.token_hash == hash_token(token) and token not in row.token_hash
    assert row.scopes == ["read", "write"]
    again = runner.invoke(app, ["token", "create", "ci-bot"])
    assert again.exit_code == 1 and "already exists" in again.output
    bad = runner.invoke(app, ["token", "create", "x", "--scope", "root"])
    assert bad.exit_code == 2 and "must be read, write or admin" in bad.output
    assert lookup_token(engine, token) is not None
    revoked = runner.invoke(app, ["token", "revoke", "ci-bot"])
    assert revoked.exit_code == 0 and lookup_token(engine, token) is None
    assert runner.invoke(app, ["token", "revoke", "ci-bot"]).exit_code == 1
    engine.dispose()


def test_api_token_list_shows_names_scopes_and_state_but_never_a_token() -> None:
    runner = CliRunner()
    assert "no tokens" in runner.invoke(app, ["token", "list"]).output
    reader = runner.invoke(app, ["token", "create", "reader"]).output.strip()
    admin = runner.invoke(app, ["token", "create", "boss", "--scope", "admin"]).output.strip()
    runner.invoke(app, ["token", "revoke", "reader"])
    listed = runner.invoke(app, ["token", "list"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert [line.split()[:2] for line in lines] == [["reader", "read"], ["boss", "admin"]]
    assert "revoked" in lines[0] and lines[1].endswith("live")
    assert reader not in listed.output and admin not in listed.output


def test_api_serve_migrates_then_answers(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "CIRCUITREG_DATA_DIR": str(tmp_path / "fresh")}
    server = subprocess.Popen(
        [sys.executable, "-m", "circuitreg", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert ready is not None, f"server exited with {server.returncode}"
        assert ready.json() == {"status": "ready", "store": "ok", "database": "ok"}
        anonymous = httpx.post(
            f"http://127.0.0.1:{port}/graphql", json={"query": "{ circuits { totalCount } }"}
        )
        assert "lacks the 'read' scope" in anonymous.json()["errors"][0]["message"]
    finally:
        server.terminate()
        server.wait(timeout=30)
