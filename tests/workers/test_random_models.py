"""Random checkpoints of real shapes: the published sizes, a GPT-2 small that loads with the
real loader and runs a method over its 32,491 edges, and clear refusals."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import transformers
from typer.testing import CliRunner

from circuitreg.cli import app
from circuitreg.workers.engine import EngineError
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.eap import EAPConfig, eap
from circuitreg.workers.models import load_model
from circuitreg.workers.random_models import (
    SHAPES,
    RandomModelError,
    write_random_model,
)
from circuitreg.workers.tasks.induction import induction_task

PUBLISHED_PARAMETERS = {  # the models' own cards / papers
    "gpt2-small": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "opt-125m": 125_239_296,
    "pythia-70m": 70_426_624,
    "pythia-160m": 162_322_944,
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_every_shape_has_its_published_size(name: str) -> None:
    with torch.device("meta"):  # sizes without allocating the weights
        model = transformers.AutoModelForCausalLM.from_config(SHAPES[name].config())
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMETERS[name]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_gpt2_small_shape_loads_and_runs_eap_over_its_edges(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["make-random-model", "gpt2-small", str(tmp_path / "g")])
    assert result.exit_code == 0, result.output
    assert "wrote a random gpt2-small" in result.output
    loaded = load_model(str(tmp_path / "g"), "cpu")
    assert (loaded.ref.n_layers, loaded.ref.n_heads, loaded.ref.d_model) == (12, 12, 768)
    graph = ComputationalGraph.from_model(loaded.bridge)
    assert graph.n_edges == 32_491
    task = induction_task(seq_len=4, n=2, d_vocab=50257, seed=0)
    scored = eap(loaded.bridge, task, graph, EAPConfig(batch_size=2))
    assert scored.edge_scores.shape == (32_491,)
    assert torch.isfinite(scored.edge_scores).all() and scored.edge_scores.abs().sum() > 0
    again = write_random_model("gpt2-small", tmp_path / "again", seed=0, n_layers=1)
    other = write_random_model("gpt2-small", tmp_path / "other", seed=1, n_layers=1)
    same = write_random_model("gpt2-small", tmp_path / "same", seed=0, n_layers=1)
    weights = "model.safetensors"
    assert _sha(again / weights) == _sha(same / weights) != _sha(other / weights)


def test_a_rotary_shape_loads_and_the_engine_names_what_it_refuses(tmp_path: Path) -> None:
    written = write_random_model("pythia-70m", tmp_path / "p", n_layers=1)
    loaded = load_model(str(written), "cpu")
    graph = ComputationalGraph.from_model(loaded.bridge)
    task = induction_task(seq_len=4, n=2, d_vocab=50304, seed=0)
    with pytest.raises(EngineError, match="positional_embedding_type='rotary'"):
        eap(loaded.bridge, task, graph, EAPConfig(batch_size=2))


def test_bad_requests_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(RandomModelError, match="unknown model shape 'gpt-9'; known: gpt2-small"):
        write_random_model("gpt-9", tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(RandomModelError, match="is not empty"):
        write_random_model("gpt2-small", tmp_path / "full", n_layers=1)
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    with pytest.raises(RandomModelError, match="n_layers must be >= 1"):
        write_random_model("gpt2-small", tmp_path / "y", n_layers=0)
    refused = CliRunner().invoke(app, ["make-random-model", "gpt-9", str(tmp_path / "z")])
    assert refused.exit_code == 2 and "unknown shape 'gpt-9'" in refused.output
