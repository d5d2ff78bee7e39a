"""The stream's shortcuts compute what the general path computes.

Where the sets first differ at a layer with no norm before its attention, the engine mixes
projected writer differences (``ResidualStream.projected``) instead of projecting each set's
inputs; reading the logits reuses a stream already cut to the read positions. Both must
give the general path's logits and gradients, for exact patching and for a fixed delta.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge

from circuitreg.workers.engine import InterventionEngine
from circuitreg.workers.engine.forward import run_forward
from circuitreg.workers.engine.stream import ResidualStream
from circuitreg.workers.engine.weights import LayerWeights
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.tasks.induction import induction_task

from .tiny_bridges import ATTN_ONLY

pytestmark = pytest.mark.usefixtures("one_thread")


def _logits_and_grad(
    engine: InterventionEngine, patch: torch.Tensor, fixed_delta: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    batch = next(engine.batches())
    rows = patch.clone().requires_grad_(True)
    logits = run_forward(
        engine.weights, engine.graph, batch.embedded, batch.task.positions, patch=rows,
        ablated=None if fixed_delta else batch.ablated,
        delta=batch.delta if fixed_delta else None,
    ).logits  # fmt: skip
    engine.metric_of(batch, logits).sum().backward()
    assert rows.grad is not None
    return logits.detach(), rows.grad


def _randomise_biases(model: Any) -> None:
    """A native bridge starts with zero biases, which would hide a bias lost in a shortcut."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 1:
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))


@pytest.fixture
def projected_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records each call of ``ResidualStream.projected`` (the shortcut), which still runs."""
    calls: list[int] = []
    projected = ResidualStream.projected

    def spy(self: ResidualStream, *args: Any) -> torch.Tensor:
        calls.append(1)
        return projected(self, *args)

    monkeypatch.setattr(ResidualStream, "projected", spy)
    return calls


@pytest.mark.parametrize("fixed_delta", [False, True], ids=["exact", "fixed_delta"])
def test_projected_first_layer_equals_the_general_path(
    fixed_delta: bool, projected_calls: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = TransformerBridge.boot_native(ATTN_ONLY)  # no norm: layer 0 takes the shortcut
    _randomise_biases(model)
    graph = ComputationalGraph.from_model(model)
    task = induction_task(seq_len=5, n=6, d_vocab=40, seed=3)
    engine = InterventionEngine(model, graph, task)  # logit difference
    generator = torch.Generator().manual_seed(2)
    patch = torch.rand(5, graph.n_edges, generator=generator)  # sets differ from layer 0
    short_logits, short_grad = _logits_and_grad(engine, patch, fixed_delta)
    assert projected_calls, (
        "the shortcut was not taken, so this compares the general path with itself"
    )
    monkeypatch.setattr(LayerWeights, "linear_qkv_input", property(lambda self: False))
    projected_calls.clear()
    general_logits, general_grad = _logits_and_grad(engine, patch, fixed_delta)
    assert not projected_calls
    assert (short_logits - general_logits).abs().max() < 1e-5
    scale = float(general_grad.abs().max())
    assert scale > 1e-3
    assert (short_grad - general_grad).abs().max() < 1e-5 * scale


@pytest.mark.parametrize(
    ("normalization", "shortcut"), [(None, True), ("LN", False)], ids=["no_norm", "layer_norm"]
)
def test_only_a_layer_without_a_norm_takes_the_shortcut(
    normalization: str | None, shortcut: bool, projected_calls: list[int]
) -> None:
    model = TransformerBridge.boot_native(dict(ATTN_ONLY, normalization_type=normalization))
    graph = ComputationalGraph.from_model(model)
    engine = InterventionEngine(model, graph, induction_task(seq_len=5, n=2, d_vocab=40, seed=3))
    engine.evaluate(torch.rand(3, graph.n_edges, generator=torch.Generator().manual_seed(0)))
    assert bool(projected_calls) is shortcut
    assert all(layer.linear_qkv_input is shortcut for layer in engine.weights.layers)


def test_projected_refuses_a_stream_already_widened() -> None:
    model = TransformerBridge.boot_native(ATTN_ONLY)
    graph = ComputationalGraph.from_model(model)
    engine = InterventionEngine(model, graph, induction_task(seq_len=5, n=2, d_vocab=40, seed=3))
    batch = next(engine.batches())
    stream = ResidualStream(
        batch.embedded.unsqueeze(0), batch.ablated, None, track=True, record=False
    )
    stream.expand(3)
    layer = engine.weights.layers[0]
    with pytest.raises(Exception, match="one set"):
        stream.projected(layer.w_qkv, layer.b_qkv, torch.zeros(3, 3, 4, 1), 1)
