"""Every module has one name: the rooms linked into ``circuitreg`` refuse their folder name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("room", ["schema", "services", "workers", "migrations"])
def test_a_room_imports_only_under_circuitreg(room: str) -> None:
    code = f"import circuitreg.{room} as linked; print(linked.__name__); import {room}"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == f"circuitreg.{room}"
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"ImportError: {room}: import it as circuitreg.{room}"
    )
