"""``circuitreg worker --check`` is the compose health check: it must tell healthy from not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "circuitreg", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_worker_check_is_healthy_when_the_databases_answer(tmp_path: Path) -> None:
    env = {"CIRCUITREG_DATA_DIR": str(tmp_path)}
    assert _run("migrate", env=env).returncode == 0
    result = _run("worker", "--check", env=env)
    assert result.returncode == 0, result.stderr
    assert "healthy" in result.stdout


def test_worker_check_fails_and_says_why_when_the_database_is_down(tmp_path: Path) -> None:
    env = {
        "CIRCUITREG_DATA_DIR": str(tmp_path),
        "CIRCUITREG_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none",
    }
    result = _run("worker", "--check", env=env)
    assert result.returncode == 1
    assert "unhealthy: OperationalError" in result.stderr
