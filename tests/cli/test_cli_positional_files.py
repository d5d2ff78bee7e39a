"""``discover --positions`` writes the dense positional scores beside the document and names
them (with their checksum) in its provenance; ``import`` stores them in the artifact store
from there, and refuses a file that is missing, changed or another circuit's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from circuitreg.cli import app
from circuitreg.schema import CircuitDocument
from circuitreg.services.artifacts import ArtifactStore
from circuitreg.services.positional_scores import PROVENANCE_KEY, decode_positional, load_positional
from circuitreg.services.stores.factory import open_store
from circuitreg.settings import get_settings

TASK = "induction:n=8,read=last"


def _discover(out: Path, positions: str = "index", task: str = TASK) -> CircuitDocument:
    args = ["discover", "--model", "toy:induction", "--task", task, "--method", "eap",
            "--positions", positions, "--top-k", "12", "--out", str(out), "--quiet"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return CircuitDocument.from_json(out.read_text())


@pytest.fixture(scope="module")
def discovered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("discover") / "pos.json"
    _discover(out)
    return out


def _copy(discovered: Path, directory: Path) -> Path:
    for source in (discovered, discovered.with_name("pos.positions.safetensors")):
        (directory / source.name).write_bytes(source.read_bytes())
    return directory / discovered.name


def test_discover_names_the_file_and_the_axis_shows_token_ids(discovered: Path) -> None:
    doc = CircuitDocument.from_json(discovered.read_text())
    entry = doc.provenance.extra[PROVENANCE_KEY]
    path = discovered.with_name(entry["file"])
    assert path.name == "pos.positions.safetensors"
    circuit_id, scores = decode_positional(path.read_bytes())
    assert circuit_id == doc.id and doc.positions is not None
    t = len(doc.positions.labels)  # index mode: one label per token, T = 2 * 8 + BOS
    assert doc.positions.mode == "index" and t == 17 and doc.positions.indices == tuple(range(t))
    assert entry["shape"] == [len(scores.edge_names), t] and entry["dtype"] == "float32"
    # the toy has no tokenizer: the axis shows the first prompt's token ids
    assert all(token.isdigit() for token in doc.positions.tokens)
    assert len(doc.positions.tokens) == t
    kept = [e for e in doc.edges if e.positional]
    assert len(kept) == 12 and all(e.position is not None for e in kept)
    # the kept positional edges are the 12 largest |score| of the dense file
    threshold = np.sort(np.abs(scores.scores).ravel())[-12]
    assert all(abs(scores.at(e.name, str(e.position))) >= threshold for e in kept)


def test_import_stores_the_positional_scores(discovered: Path, tmp_path: Path) -> None:
    source = _copy(discovered, tmp_path)
    result = CliRunner().invoke(app, ["import", str(source)])
    assert result.exit_code == 0, result.output
    circuit_id = result.output.strip().splitlines()[-1]
    settings = get_settings()
    store = open_store(settings)
    try:
        stored = store.get_circuit(circuit_id)
        assert stored is not None
        entry = stored.provenance.extra[PROVENANCE_KEY]
        assert "file" not in entry and entry["uri"].endswith(".positions.safetensors")
        scores = load_positional(store, ArtifactStore(settings.resolved_artifact_url), circuit_id)
    finally:
        store.close()
    _, written = decode_positional(source.with_name("pos.positions.safetensors").read_bytes())
    assert scores is not None and np.array_equal(scores.scores, written.scores)


@pytest.mark.parametrize(
    ("damage", "message"),
    [("delete", "which is missing"), ("flip", "checksum differs")],
)
def test_import_refuses_a_missing_or_changed_file(
    discovered: Path, tmp_path: Path, damage: str, message: str
) -> None:
    source = _copy(discovered, tmp_path)
    dense = source.with_name("pos.positions.safetensors")
    if damage == "delete":
        dense.unlink()
    else:
        data = bytearray(dense.read_bytes())
        data[-1] ^= 0x01
        dense.write_bytes(bytes(data))
    result = CliRunner().invoke(app, ["import", str(source)])
    assert result.exit_code == 2 and message in result.output and "pos.positions" in result.output


def test_import_refuses_another_circuits_scores(discovered: Path, tmp_path: Path) -> None:
    """A file written for a different run (here: seed 1's prompts) is not this circuit's."""
    source = _copy(discovered, tmp_path)
    other = _discover(tmp_path / "other.json", task=TASK + ",seed=1")
    dense = source.with_name("pos.positions.safetensors")
    dense.write_bytes(tmp_path.joinpath("other.positions.safetensors").read_bytes())
    doc = CircuitDocument.from_json(source.read_text())
    entry = dict(doc.provenance.extra[PROVENANCE_KEY], sha256=None)  # skip the checksum
    extra = dict(doc.provenance.extra, **{PROVENANCE_KEY: entry})
    doc = doc.model_copy(update={"provenance": doc.provenance.model_copy(update={"extra": extra})})
    source.write_text(doc.to_json())
    result = CliRunner().invoke(app, ["import", str(source)])
    assert result.exit_code == 2 and f"of circuit {other.id}, not {doc.id}" in result.output
