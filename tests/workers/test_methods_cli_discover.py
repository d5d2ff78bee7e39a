"""`circuitreg discover` and `circuitreg methods` on a small locally saved GPT-2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from circuitreg.cli import app
from circuitreg.schema.circuit import CircuitDocument
from circuitreg.workers.graph import ComputationalGraph

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=60, n_positions=32,
                        bos_token_id=0, eos_token_id=0)  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(path)
    return path


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("eap", ["--top-k", "20"]),
        ("eap", ["--optimal", "20"]),
        ("acdc", ["--param", "tau=0.0001", "--param", "set_batch=8"]),
    ],
)
def test_discover_writes_a_valid_circuit(
    gpt2_dir: Path, tmp_path: Path, method: str, extra: list[str]
) -> None:
    out = tmp_path / "circuit.json"
    args = ["discover", "--model", str(gpt2_dir), "--task", "induction:seq_len=5,n=8",
            "--method", method, "--out", str(out), "--quiet", "--device", "cpu",
            *extra]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = CircuitDocument.from_json(out.read_text())
    assert doc.method.name == method and doc.task.name == "induction"
    assert doc.task.corruption and doc.provenance.transformer_lens_version
    assert len(doc.edges) == ComputationalGraph(n_layers=2, n_heads=2).n_edges
    assert doc.id in result.output
    if method == "eap":
        assert 0 < len(doc.circuit_edges()) <= 20
        mode = {"--top-k": "top_k", "--optimal": "optimal"}[extra[0]]
        assert doc.provenance.extra["selection"]["mode"] == mode
    else:
        assert doc.provenance.extra["selection"]["mode"] == "mask"


def test_discover_reports_bad_input_clearly(gpt2_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.json"
    base = ["discover", "--model", str(gpt2_dir), "--task", "induction:n=4", "--out", str(out)]
    result = CliRunner().invoke(app, [*base, "--method", "nope"])
    assert result.exit_code == 2 and "unknown method 'nope'" in result.output
    result = CliRunner().invoke(app, [*base, "--method", "eap", "--param", "steps=3"])
    assert result.exit_code == 2 and "unknown parameter" in result.output
    result = CliRunner().invoke(app, [*base, "--method", "eap", "--ablation", "blur"])
    assert result.exit_code == 2 and "ablation" in result.output
    assert not out.exists()


def test_methods_lists_options_as_json() -> None:
    result = CliRunner().invoke(app, ["methods", "--json"])
    assert result.exit_code == 0, result.output
    names = {m["name"] for m in json.loads(result.output)}
    assert {"eap", "eap_ig", "acdc"} <= names


def test_discover_top_k_keeps_k_edges_on_the_toy(tmp_path: Path) -> None:
    """The issue's case: ``--top-k 24`` with EAP-IG on the induction toy kept 23 edges."""
    out = tmp_path / "c.json"
    args = ["discover", "--model", "toy:induction", "--task", "induction", "--method",
            "eap_ig", "--top-k", "24", "--out", str(out), "--quiet", "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = CircuitDocument.from_json(out.read_text())
    assert len(doc.circuit_edges()) == 24
    assert f"24 of {len(doc.edges)} edges" in result.output


def test_an_unknown_model_is_one_line_and_names_the_spec_kinds(tmp_path: Path) -> None:
    """No hub here: one line naming the spec, quickly, instead of 30 s of logged retries."""
    out = tmp_path / "c.json"
    base = ["discover", "--task", "induction", "--method", "eap", "--out", str(out), "--quiet"]
    result = CliRunner().invoke(app, [*base, "--model", "gpt-9"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown model 'gpt-9'")
    assert "a model spec is toy:induction" in lines[0]
    unknown_kind = CliRunner().invoke(app, [*base, "--model", "lab:my-model"])
    assert unknown_kind.exit_code == 2 and "unknown model spec kind 'lab:'" in unknown_kind.output
    assert not out.exists()
