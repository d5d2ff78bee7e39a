"""The stream's shortcuts compute what the general path computes.

At a layer with no norm before its attention, the engine forms each receiver's q/k/v input
projected (``ResidualStream.projected``): the shared rows are projected once, and heads that
differ per set enter low rank, through ``W_O W_Q`` etc., never formed ``d_model``-wide;
reading the logits reuses a stream already cut to the read positions. All must give the
general path's logits and gradients, for exact patching and for a fixed delta, on an
attention-only model and on one with MLPs (tracr's shape: MLPs and no norm).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge

from circuitreg.workers.engine import InterventionEngine
from circuitreg.workers.engine.forward import run_forward
from circuitreg.workers.engine.groups import WriterGroup
from circuitreg.workers.engine.reference import reference_forward
from circuitreg.workers.engine.strategies import SharedPrefix
from circuitreg.workers.engine.stream import ResidualStream
from circuitreg.workers.engine.weights import EngineError, LayerWeights
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.tasks.induction import induction_task

from .tiny_bridges import ATTN_ONLY, WITH_MLP

pytestmark = pytest.mark.usefixtures("one_thread")


def _logits_and_grad(
    engine: InterventionEngine, patch: torch.Tensor, fixed_delta: bool, forward: Any = run_forward
) -> tuple[torch.Tensor, torch.Tensor]:
    batch = next(engine.batches())
    rows = patch.clone().requires_grad_(True)
    logits = forward(
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
@pytest.mark.parametrize(
    "config", [ATTN_ONLY, dict(WITH_MLP, normalization_type=None)], ids=["attn_only", "mlp"]
)
def test_projected_inputs_equal_the_general_path(
    config: dict[str, Any],
    fixed_delta: bool,
    projected_calls: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = TransformerBridge.boot_native(config)  # no norm: every layer is projected
    _randomise_biases(model)
    # In double precision the two orders of summation agree to rounding (1e-16), so a
    # tight bound catches a lost or misplaced term that float32 rounding could hide.
    model = model.to(torch.float64)
    graph = ComputationalGraph.from_model(model)
    task = induction_task(seq_len=5, n=6, d_vocab=40, seed=3)
    engine = InterventionEngine(model, graph, task)  # logit difference
    generator = torch.Generator().manual_seed(2)
    patch = torch.rand(5, graph.n_edges, generator=generator, dtype=torch.float64)
    short_logits, short_grad = _logits_and_grad(engine, patch, fixed_delta)
    # Every layer is projected; the last twice (keys and values at every position, then
    # queries at the read positions only).
    assert len(projected_calls) == graph.n_layers + 1, (
        "a layer was not projected, so this compares the general path with itself"
    )
    monkeypatch.setattr(LayerWeights, "linear_qkv_input", property(lambda self: False))
    projected_calls.clear()
    general_logits, general_grad = _logits_and_grad(engine, patch, fixed_delta)
    assert not projected_calls
    assert (short_logits - general_logits).abs().max() < 1e-10
    scale = float(general_grad.abs().max())
    assert scale > 1e-3
    assert (short_grad - general_grad).abs().max() < 1e-10 * scale
    # and both are the patching formula, computed plainly
    reference_logits, reference_grad = _logits_and_grad(
        engine, patch, fixed_delta, forward=reference_forward
    )
    assert (short_logits - reference_logits).abs().max() < 1e-10
    assert (short_grad - reference_grad).abs().max() < 1e-10 * scale


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


def test_a_reader_must_read_before_later_writers_are_added() -> None:
    model = TransformerBridge.boot_native(ATTN_ONLY)
    graph = ComputationalGraph.from_model(model)
    engine = InterventionEngine(model, graph, induction_task(seq_len=5, n=2, d_vocab=40, seed=3))
    batch = next(engine.batches())
    stream = ResidualStream(
        batch.embedded.unsqueeze(0), batch.ablated, None, track=True, record=False
    )
    stream.add(torch.zeros(graph.n_heads, 1, *batch.embedded.shape))  # layer 0's heads
    # The stream now holds writers 0:5; a reader of the input alone came too late.
    with pytest.raises(EngineError, match="read after 5 writers"):
        stream.read(torch.zeros(1, 1), 1)
    # A patched stream keeps per-set writers out of its common part: no plain sum of it.
    with pytest.raises(EngineError, match="take read, shifted or projected"):
        _ = stream.resid


@pytest.mark.parametrize("config", [ATTN_ONLY, WITH_MLP], ids=["no_norm", "layer_norm"])
def test_attending_once_per_distinct_row_equals_attending_per_set(
    config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = TransformerBridge.boot_native(config).to(torch.float64)
    _randomise_biases(model)
    graph = ComputationalGraph.from_model(model)
    task = induction_task(seq_len=5, n=4, d_vocab=40, seed=3)
    engine = InterventionEngine(model, graph, task, set_batch=32)  # all 24 sets in one pass
    generator = torch.Generator().manual_seed(8)
    patch = (torch.rand(24, graph.n_edges, generator=generator) < 0.4).double()
    distinct_rows: list[int] = []

    attend_once_per_row = SharedPrefix.attend_once_per_row

    def spy(self: SharedPrefix, index: int, *args: Any) -> torch.Tensor | None:
        z = attend_once_per_row(self, index, *args)
        if self.widens_at(index):
            distinct_rows.append(0 if z is None else 1)
        return z

    monkeypatch.setattr(SharedPrefix, "attend_once_per_row", spy)
    once = engine.evaluate(patch)
    # 0/1 rows at layer 0: at most 8 distinct (q, k, v) per head, so 24 sets attend 8 times.
    assert distinct_rows == [1]
    monkeypatch.setattr(SharedPrefix, "attend_once_per_row", lambda self, *args: None)
    per_set = engine.evaluate(patch)
    assert (once - per_set).abs().max() < 1e-10
    batch = next(engine.batches())
    args = (engine.weights, graph, batch.embedded, batch.task.positions)
    with torch.no_grad():
        logits = reference_forward(*args, patch=patch, ablated=batch.ablated).logits
    reference = engine.metric_of(batch, logits).double()
    assert (once - reference).abs().max() < 1e-10
    assert per_set.std() > 1e-3  # the sets differ, so a wrong gather would show


def test_a_low_rank_head_group_sums_as_its_formed_outputs_do() -> None:
    generator = torch.Generator().manual_seed(11)
    z = torch.randn(3, 2, 5, 4 * 6, generator=generator, dtype=torch.float64)  # [S, N, T, g*dh]
    w_o = torch.randn(4, 6, 10, generator=generator, dtype=torch.float64)  # [g, dh, d]
    row = torch.zeros(4, 2, 5, 10, dtype=torch.float64)
    low_rank = WriterGroup(0, 4, row, z=z, w_o=w_o)
    formed = WriterGroup(0, 4, row, outputs=low_rank.full_outputs().clone())
    # each head's output by hand: head h reads its own d_head slice of z
    by_hand = torch.einsum("sntgh,ghd->gsntd", z.view(3, 2, 5, 4, 6), w_o)
    assert torch.allclose(formed.outputs, by_hand)
    weight = torch.rand(3, 4, generator=generator, dtype=torch.float64)
    fresh = WriterGroup(0, 4, row, z=z, w_o=w_o)  # outputs not formed: through W_O
    assert torch.allclose(fresh.weighted_sum(weight), formed.weighted_sum(weight))


@pytest.mark.parametrize("fixed_delta", [False, True], ids=["exact", "fixed_delta"])
def test_readers_behind_a_norm_mix_the_buffered_outputs_as_one_product_per_group_does(
    fixed_delta: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three layers with norms and MLPs: the last layer's receivers read six per-set groups.
    model = TransformerBridge.boot_native(dict(WITH_MLP, n_layers=3)).to(torch.float64)
    _randomise_biases(model)
    graph = ComputationalGraph.from_model(model)
    engine = InterventionEngine(model, graph, induction_task(seq_len=5, n=4, d_vocab=40, seed=3))
    batch = next(engine.batches())
    patch = torch.rand(5, graph.n_edges, generator=torch.Generator().manual_seed(4)).double()

    def logits() -> torch.Tensor:
        with torch.no_grad():
            return run_forward(
                engine.weights, graph, batch.embedded, batch.task.positions, patch=patch,
                ablated=None if fixed_delta else batch.ablated,
                delta=batch.delta if fixed_delta else None,
            ).logits  # fmt: skip

    runs: list[int] = []
    per_set_runs = ResidualStream._per_set_runs

    def spy(self: ResidualStream, *args: Any, **kwargs: Any) -> Any:
        out = per_set_runs(self, *args, **kwargs)
        runs.append(sum(self._buffer is not None and o.data_ptr() == self._buffer.data_ptr()
                        for o, _, _ in out))  # fmt: skip
        return out

    monkeypatch.setattr(ResidualStream, "_per_set_runs", spy)
    buffered = logits()
    assert sum(runs) >= 2 * graph.n_layers - 1, "the buffer was not read"
    monkeypatch.setattr(ResidualStream, "slot", lambda self, *args: None)  # concatenated
    runs.clear()
    concatenated = logits()
    assert not any(runs)

    def one_per_group(self: ResidualStream, groups: list[WriterGroup], **kwargs: Any) -> Any:
        return [(group.full_outputs(), group.lo, group.hi) for group in groups]

    monkeypatch.setattr(ResidualStream, "_per_set_runs", one_per_group)
    per_group = logits()
    assert (buffered - per_group).abs().max() < 1e-10
    assert (concatenated - per_group).abs().max() < 1e-10
    assert per_group.std(0).max() > 1e-3  # the sets differ, so a set's outputs misplaced shows
