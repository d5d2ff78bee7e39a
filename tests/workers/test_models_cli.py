"""``circuitreg train-toy`` and ``circuitreg heads`` on a tiny toy."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from circuitreg.cli import app
from circuitreg.workers.toy import load_run

TINY_ARGS = ["--steps", "8", "--d-model", "16", "--n-heads", "2", "--d-vocab", "16",
             "--seq-len", "4"]  # fmt: skip


def test_train_toy_writes_a_complete_run_and_reports_heads(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train-toy", "induction", *TINY_ARGS, "--out", str(out)])
    assert result.exit_code == 0, result.output
    run = load_run(out)
    assert run.config.steps == 8 and run.config.min_block == 4
    assert "checkpoints at steps" in result.output and "best induction head" in result.output

    heads = CliRunner().invoke(app, ["heads", "--model", str(out), "--top", "2"])
    assert heads.exit_code == 0, heads.output
    assert heads.output.count("a") > 0 and "previous_token_head:" in heads.output


def test_train_toy_rejects_unknown_toys_and_bad_configs() -> None:
    unknown = CliRunner().invoke(app, ["train-toy", "bigram", *TINY_ARGS])
    assert unknown.exit_code != 0 and "only toy is 'induction'" in unknown.output
    bad = CliRunner().invoke(app, ["train-toy", "induction", "--d-model", "30"])
    assert bad.exit_code != 0 and "divisible" in bad.output
