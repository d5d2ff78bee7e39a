"""``circuitreg validate`` and ``circuitreg compare`` on a toy checkpoint written here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from circuitreg.cli import app
from circuitreg.schema import CircuitDocument
from circuitreg.workers.toy.checkpoint import (
    checkpoint_name,
    new_native_model,
    save_checkpoint,
    write_run_config,
)
from circuitreg.workers.toy.config import ToyConfig

TASK = "induction:seq_len=6,n=16"


@pytest.fixture
def circuit(tmp_path: Path) -> tuple[Path, Path]:
    """An untrained toy checkpoint and an EAP circuit discovered in it."""
    config = ToyConfig(seed=3, d_model=32, n_heads=2, d_vocab=24, seq_len=6, min_block=2)
    run_dir = tmp_path / "toy"
    run_dir.mkdir()
    write_run_config(run_dir, config)
    checkpoint = run_dir / checkpoint_name(0)
    save_checkpoint(new_native_model(config), checkpoint, step=0, config_hash=config.config_hash())
    out = tmp_path / "circuit.json"
    result = CliRunner().invoke(
        app,
        ["discover", "--model", str(checkpoint), "--task", TASK, "--method", "eap",
         "--top-k", "12", "--out", str(out), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return checkpoint, out


def test_validate_twice_keeps_both_ablations_and_draws_charts(circuit: tuple[Path, Path]) -> None:
    checkpoint, path = circuit
    runner = CliRunner()
    for ablation in ("resample", "zero"):
        result = runner.invoke(
            app,
            ["validate", str(path), "--model", str(checkpoint), "--task", TASK,
             "--ablation", ablation],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert f"{ablation} ablation" in result.output
        assert "faithfulness" in result.output and "ablation_controls" in result.output
        assert "suffix_ablation" in result.output and "|dlogits| circuit" in result.output
    doc = CircuitDocument.from_json(path.read_text())
    faithfulness = [r for r in doc.validation if r.name == "faithfulness"]
    assert [r.ablation for r in faithfulness] == ["resample", "zero"]
    # The checkpoint is untrained: its clean-ablated gap is noise, so faithfulness is stored
    # as undefined, with the gap and the reason, not as a ratio of two tiny numbers.
    for r in faithfulness:
        assert r.values["faithfulness"] is None and r.passed is None
        assert "within noise" in r.values["undefined"] and isinstance(r.values["gap"], float)
    assert "undefined: the clean-ablated gap" in result.output
    for chart in ("curve", "controls"):
        for ablation in ("resample", "zero"):
            for suffix in ("png", "svg"):
                drawn = path.with_name(f"circuit.{chart}.{ablation}.{suffix}")
                assert drawn.stat().st_size > 0

    compared = runner.invoke(app, ["compare", str(path), str(path), "--json"])
    assert compared.exit_code == 0, compared.output
    report = json.loads(compared.output)
    assert report["alignment"] == "canonical"
    # Both sides are the same untrained circuit with undefined faithfulness: no verdict.
    assert report["edge_jaccard"] == 1.0 and report["performance_agrees"] is None
    assert report["canonical_cosine"] == report["role_aligned_cosine"] == pytest.approx(1.0)
    plain = runner.invoke(app, ["compare", str(path), str(path)])
    assert "role_aligned_cosine" in plain.output and "canonical_cosine" in plain.output


def test_bad_input_is_named_and_nothing_is_written(
    circuit: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoint, path = circuit
    before = path.read_bytes()
    runner = CliRunner()
    bad_ablation = runner.invoke(
        app,
        ["validate", str(path), "--model", str(checkpoint), "--task", TASK, "--ablation", "noise"],
    )
    assert bad_ablation.exit_code == 2 and "noise" in bad_ablation.output
    missing = runner.invoke(
        app, ["validate", str(tmp_path / "nope.json"), "--model", "x", "--task", TASK]
    )
    assert missing.exit_code == 2 and "does not exist" in missing.output
    bad_task = runner.invoke(
        app, ["validate", str(path), "--model", str(checkpoint), "--task", "no-such-task"]
    )
    assert bad_task.exit_code == 2 and "no-such-task" in bad_task.output
    assert path.read_bytes() == before
    not_json = tmp_path / "other.json"
    not_json.write_text('{"format": "circuitreg/1"}')
    refused = runner.invoke(app, ["compare", str(path), str(not_json)])
    assert refused.exit_code == 2 and "is not a circuit document" in refused.output
