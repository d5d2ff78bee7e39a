"""``circuitreg demo`` end to end, as the README runs it, and again on a different toy.

The demo exits non-zero unless the circuit the method found contains the previous-token and
induction heads that head_detector names for *that* model and the K-composition edge between
them, and the API answered with them; so these tests fail if any stage stops working.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _run_demo(data_dir: Path, *args: str) -> str:
    env = {**os.environ, "CIRCUITREG_DATA_DIR": str(data_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "circuitreg", "demo", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result.stdout


def _heads(output: str) -> tuple[str, str]:
    found = re.search(
        r"previous-token head (a0\.h\d+) \([\d.]+\), induction head (a1\.h\d+)", output
    )
    assert found, output
    return found.group(1), found.group(2)


def test_demo_answers_with_the_induction_circuit(
    tmp_path: Path, settings_graph_backend: str
) -> None:
    """On the embedded default and with ``CIRCUITREG_GRAPH_BACKEND=neo4j`` (the real server)."""
    output = _run_demo(tmp_path / "data")
    assert f"circuit store: {settings_graph_backend}" in output
    prev, induction = _heads(output)
    assert f"{prev} (layer 0" in output and "labels ['previous-token head']" in output
    assert f"{induction} (layer 1" in output and "labels ['induction head']" in output
    assert re.search(rf"K-composition edge {prev}->{induction}<k>: score -?[\d.]+", output)
    formed = re.search(r"in every circuit from step-(\d+) on", output)
    assert formed and int(formed.group(1)) > 0, output  # never in the untrained model
    # sharedSubcircuits: the edge is shared by every circuit after the phase change and by
    # none before it (the demo also exits non-zero otherwise).
    window = re.search(r"induction phase change \(repeated-half loss\): steps (\d+)-(\d+)", output)
    assert window and int(window.group(1)) < int(formed.group(1)), output
    assert re.search(rf"circuits after it: \d+ edges in all of them; {re.escape(prev)}->", output)
    assert re.search(r"circuits after it: .* among them: yes", output)
    assert re.search(r"circuits before it: .* among them: no", output)


def test_demo_finds_the_heads_of_a_different_toy(tmp_path: Path) -> None:
    output = _run_demo(tmp_path / "data", "--seed", "1", "--d-model", "48", "--checkpoints", "2")
    prev, induction = _heads(output)
    assert re.search(rf"K-composition edge {prev}->{induction}<k>: score", output)
