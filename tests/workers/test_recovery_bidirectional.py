"""The engine on tracr ``reverse``, whose attention is bidirectional (non-causal)."""

from __future__ import annotations

import pytest
import torch

from circuitreg.workers.engine import EngineError, InterventionEngine, read_weights
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.models import load_model
from circuitreg.workers.tasks.tracr_task import tracr_task


def test_engine_reproduces_reverse_forward_and_full_patch_is_the_corrupted_run() -> None:
    loaded = load_model("tracr:reverse", "cpu")
    bridge = loaded.bridge
    assert bridge.cfg.attention_dir == "bidirectional"
    assert read_weights(bridge).causal is False
    task = tracr_task("reverse", n=16, seed=3)
    graph = ComputationalGraph.from_model(bridge)
    engine = InterventionEngine(bridge, graph, task, ablation="resample")
    batch = next(engine.batches())
    all_positions = torch.arange(task.seq_len).expand(task.n_examples, -1)
    with torch.no_grad():
        clean_theirs = bridge(task.clean)
        corrupted_theirs = bridge(task.corrupted)
        ours = engine.run(batch)[0]
        patched = engine.run(batch, torch.ones(1, graph.n_edges))[0]
    read = all_positions[:, 1:]  # the task reads every non-BOS position
    assert torch.equal(batch.task.positions, read)
    rows = torch.arange(task.n_examples)[:, None]
    assert float((ours - clean_theirs[rows, read]).abs().max()) <= 1e-4
    assert float((patched - corrupted_theirs[rows, read]).abs().max()) <= 1e-4
    # The runs really differ, so the comparison above is not vacuous.
    assert float((clean_theirs - corrupted_theirs).abs().max()) > 0.1


def test_reverse_needs_the_bidirectional_mask() -> None:
    """Masking future keys (the old causal-only engine) would not reproduce the model."""
    loaded = load_model("tracr:reverse", "cpu")
    task = tracr_task("reverse", n=4, seed=0)
    graph = ComputationalGraph.from_model(loaded.bridge)
    engine = InterventionEngine(loaded.bridge, graph, task)
    object.__setattr__(engine.weights, "causal", True)
    with pytest.raises(EngineError, match="differs from the model's forward"):
        engine.verify()


def test_unknown_attention_direction_is_refused() -> None:
    loaded = load_model("tracr:frac_prevs", "cpu")
    loaded.bridge.cfg.attention_dir = "sideways"
    with pytest.raises(EngineError, match="attention_dir='sideways'"):
        read_weights(loaded.bridge)
