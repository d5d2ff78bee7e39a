"""``run_forward`` computes what ``reference_forward`` (the patching formula, plainly) does.

The reference is first pinned to the bridge: its unpatched and fully patched runs are the
model's clean and corrupted forwards, and on many-edge sets it scores as the hooked loop
(``HookedEdgePatcher``, which shares no forward code with it) does. ``run_forward`` is then
held to it with each optimisation alone, all of them and none (``Strategies``), on tiny
random models (attention-only with no norm, LayerNorm and MLPs, tracr's shape of MLPs and no
norm, attention-only with a norm, bidirectional, a parallel-block graph), for 0/1 and
fractional rows, rows that agree until the last layer (ACDC's candidates) and many 0/1 rows
that differ at layer 0, exact patching and a fixed delta, overrides and recorded writer
outputs, logits and gradients: to 1e-10 in float64, 1e-5 in float32.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge

from circuitreg.workers.engine import EngineError, HookedEdgePatcher, InterventionEngine
from circuitreg.workers.engine.engine import PreparedBatch
from circuitreg.workers.engine.forward import ForwardOutput, Override, run_forward
from circuitreg.workers.engine.reference import reference_forward
from circuitreg.workers.engine.strategies import NONE, SharedPrefix, Strategies
from circuitreg.workers.engine.stream import ResidualStream
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.tasks.induction import induction_task

from .tiny_bridges import ATTN_ONLY, WITH_MLP

pytestmark = pytest.mark.usefixtures("one_thread")

MODELS: dict[str, dict[str, Any]] = {
    "attn_only": ATTN_ONLY,  # no norm: projected inputs, heads kept low rank
    "ln_mlp": dict(WITH_MLP, n_layers=3),
    "tracr_like": dict(WITH_MLP, normalization_type=None),  # MLPs and no norm
    "attn_ln": dict(ATTN_ONLY, normalization_type="LN"),
    "bidirectional": dict(WITH_MLP, attention_dir="bidirectional"),
    # The native bridge computes its blocks in sequence (so the engine would refuse it); only
    # the two forwards are compared here, on the graph's parallel reading.
    "parallel": dict(WITH_MLP, parallel_attn_mlp=True),
}
NAMES = ("shared_prefix", "narrow_last_layer", "projected_qkv")
ONE = {name: replace(NONE, **{name: True}) for name in NAMES}  # each strategy alone
CONFIGS: dict[str, Strategies] = {"none": NONE, **ONE, "all": Strategies()}


def _setup(
    name: str, dtype: torch.dtype = torch.float64
) -> tuple[InterventionEngine, PreparedBatch]:
    model = TransformerBridge.boot_native(MODELS[name])
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():  # a native bridge starts with zero biases, which hides a lost bias
        for parameter in model.parameters():
            if parameter.ndim == 1:
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    model = model.to(dtype)
    graph = ComputationalGraph.from_model(model)
    task = induction_task(seq_len=6, n=4, d_vocab=40, seed=3)
    assert task.positions.shape[1] < task.seq_len  # so the last layer can be narrowed
    engine = InterventionEngine(model, graph, task, verify=name != "parallel")
    return engine, next(engine.batches())


def _patches(graph: ComputationalGraph, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    n = graph.n_edges

    def rand(sets: int) -> torch.Tensor:
        return torch.rand(sets, n, generator=generator, dtype=torch.float64)

    late = min(slot.edge_start for slot in graph.slots if slot.layer in (None, graph.n_layers - 1))
    acdc = (rand(1) < 0.3).double().repeat(6, 1)
    for i in range(6):  # each candidate flips one more edge into the last layer or logits
        edge = late + i * (n - late) // 6
        acdc[i:, edge] = 1.0 - acdc[i:, edge]
    patches = {
        "binary": (rand(6) < 0.3).double(),
        "fractional": rand(5),
        "acdc": acdc,  # the sets agree until the last layer: widened there
        "layer0": (rand(16) < 0.4).double(),  # many 0/1 rows: attended once per distinct row
        "single": rand(1),
    }
    return {name: patch.to(dtype) for name, patch in patches.items()}


def _cases(
    engine: InterventionEngine, batch: PreparedBatch
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(label, keyword arguments of both forwards) for every combination compared."""
    graph = engine.graph
    exact = {"ablated": batch.ablated}
    fixed = {"delta": batch.delta}
    yield "unpatched", {}
    for name, patch in _patches(graph, batch.embedded.dtype).items():
        yield f"{name}/exact", {"patch": patch, **exact}
        yield f"{name}/fixed_delta", {"patch": patch, **fixed}
    patch = _patches(graph, batch.embedded.dtype)["fractional"]
    last = graph.n_layers - 1
    heads = graph.writer_index(0, 0), graph.writer_index(0, 0) + graph.n_heads
    final = (  # the last layer's MLP, or its heads in an attention-only model (not narrowed)
        (graph.writer_index(last, 0), graph.writer_index(last, 0) + graph.n_heads)
        if graph.attn_only
        else (graph.writer_index(last), graph.writer_index(last) + 1)
    )
    # EAP-IG's activations: one writer group at a time replaced by fixed values
    for (lo, hi), source in (((0, 1), exact), (heads, fixed), (final, fixed), (final, exact)):
        values = 0.4 * batch.clean_outputs[:, :, lo:hi] + 0.6 * batch.ablated[:, :, lo:hi]
        mode = "exact" if "ablated" in source else "fixed_delta"
        yield f"override {lo}:{hi}/{mode}", {"patch": patch, **source,
                                            "override": Override(lo, hi, values)}  # fmt: skip
    yield "record", {"record": True}
    yield "record/exact", {"patch": patch, **exact, "record": True}


@pytest.fixture
def strategies_run(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The names of the strategies that did something in the forwards since it was made."""
    ran: set[str] = set()
    rows, at, projected = SharedPrefix.rows, ResidualStream.at, ResidualStream.projected

    def spy_rows(self: SharedPrefix, index: int) -> torch.Tensor | None:
        out = rows(self, index)
        if out is not None and out.shape[0] < self.n_sets:  # one row computed for every set
            ran.add("shared_prefix")
        return out

    def spy_at(self: ResidualStream, positions: torch.Tensor, adds_follow: bool = True) -> Any:
        if adds_follow:  # the last layer's queries, MLP and logits follow at these positions
            ran.add("narrow_last_layer")
        return at(self, positions, adds_follow)

    def spy_projected(self: ResidualStream, *args: Any) -> torch.Tensor:
        ran.add("projected_qkv")
        return projected(self, *args)

    monkeypatch.setattr(SharedPrefix, "rows", spy_rows)
    monkeypatch.setattr(ResidualStream, "at", spy_at)
    monkeypatch.setattr(ResidualStream, "projected", spy_projected)
    return ran


def _args(engine: InterventionEngine, batch: PreparedBatch) -> tuple[Any, ...]:
    return engine.weights, engine.graph, batch.embedded, batch.task.positions


def _gradient(forward: Any, engine: InterventionEngine, batch: PreparedBatch, fixed_delta: bool,
              **kwargs: Any) -> torch.Tensor:  # fmt: skip
    """d metric / d patch at fractional rows, through ``forward``."""
    rows = _patches(engine.graph, torch.float64)["fractional"].requires_grad_(True)
    source = {"delta": batch.delta} if fixed_delta else {"ablated": batch.ablated}
    logits = forward(*_args(engine, batch), patch=rows, **source, **kwargs).logits
    engine.metric_of(batch, logits).sum().backward()
    assert rows.grad is not None
    return rows.grad


@functools.cache  # the reference's runs are the same whatever the strategies compared
def _reference(model: str) -> tuple[dict[str, ForwardOutput], list[torch.Tensor]]:
    engine, batch = _setup(model)
    with torch.no_grad():
        runs = {label: reference_forward(*_args(engine, batch), **kwargs)
                for label, kwargs in _cases(engine, batch)}  # fmt: skip
    return runs, [_gradient(reference_forward, engine, batch, fixed) for fixed in (False, True)]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("model", MODELS)
def test_each_strategy_computes_what_the_reference_computes(
    model: str, config: str, strategies_run: set[str]
) -> None:
    engine, batch = _setup(model)
    runs, reference_grads = _reference(model)
    strategies_run.clear()  # not the engine's own clean run, which uses them all
    strategies = CONFIGS[config]
    for label, kwargs in _cases(engine, batch):
        with torch.no_grad():
            ours = run_forward(*_args(engine, batch), strategies=strategies, **kwargs)
        reference = runs[label]
        assert ours.logits.shape == reference.logits.shape, label
        assert (ours.logits - reference.logits).abs().max() < 1e-10, label
        if kwargs.get("record"):
            assert (ours.writer_outputs - reference.writer_outputs).abs().max() < 1e-10, label
        if "override" in kwargs:  # it changes the run, so the comparison tests it
            plain = runs["fractional/" + label.split("/")[-1]]
            assert (plain.logits - reference.logits).abs().max() > 1e-6, label
        if "patch" in kwargs and kwargs["patch"].shape[0] > 1:
            # far above the tolerance, so sets mixed up would show
            assert reference.logits.std(0).max() > 1e-8, f"{label}: the sets must differ"
    for fixed_delta, expected in zip((False, True), reference_grads, strict=True):
        grad = _gradient(run_forward, engine, batch, fixed_delta, strategies=strategies)
        scale = float(expected.abs().max())
        assert scale > 1e-3
        assert (grad - expected).abs().max() < 1e-10 * scale
    on = {name for name in NAMES if getattr(strategies, name)}
    if not all(layer.linear_qkv_input for layer in engine.weights.layers):
        on.discard("projected_qkv")  # behind a norm, q/k/v are not linear in the writers
    assert strategies_run == on, "a strategy did not run, so the comparison would not test it"


@pytest.mark.parametrize("model", ["attn_only", "ln_mlp", "tracr_like"])
def test_the_engine_in_float32_agrees_with_the_reference(model: str) -> None:
    engine, batch = _setup(model, torch.float32)
    for label, kwargs in _cases(engine, batch):
        with torch.no_grad():
            ours = run_forward(*_args(engine, batch), **kwargs)
            reference = reference_forward(*_args(engine, batch), **kwargs)
        scale = max(1.0, float(reference.logits.abs().max()))
        assert (ours.logits - reference.logits).abs().max() < 1e-5 * scale, label


@pytest.mark.parametrize("model", ["attn_only", "ln_mlp", "bidirectional"])
def test_the_reference_unpatched_and_fully_patched_is_the_bridge(model: str) -> None:
    engine, batch = _setup(model, torch.float32)
    task, graph = batch.task, engine.graph
    everywhere = torch.arange(task.seq_len).expand(task.n_examples, -1)
    args = (engine.weights, graph, batch.embedded, everywhere)
    with torch.no_grad():
        clean = reference_forward(*args).logits[0]
        ones = torch.ones(1, graph.n_edges)
        corrupted = reference_forward(*args, patch=ones, ablated=batch.ablated).logits[0]
        assert (clean - engine.model(task.clean)).abs().max() < 1e-4
        assert (corrupted - engine.model(task.corrupted)).abs().max() < 1e-4
        assert (clean - corrupted).abs().max() > 0.1


@pytest.mark.parametrize("model", ["attn_only", "ln_mlp"])
def test_the_reference_scores_many_edge_sets_as_the_hooked_loop_does(model: str) -> None:
    engine, batch = _setup(model, torch.float32)
    hooked = HookedEdgePatcher(engine.model, engine.graph, batch.task)  # logit difference
    sets = torch.rand(6, engine.graph.n_edges, generator=torch.Generator().manual_seed(3)) < 0.3
    args = (engine.weights, engine.graph, batch.embedded, batch.task.positions)
    with torch.no_grad():
        logits = reference_forward(*args, patch=sets.float(), ablated=batch.ablated).logits
    ours = hooked.metric(logits, batch.task, hooked.clean_logprobs).double()
    theirs = hooked.evaluate(sets.float())
    assert (ours - theirs).abs().max() < 1e-4
    assert float(theirs.max() - theirs.min()) > 1e-3, "the sets must differ for this to test"


def test_an_override_must_cover_one_whole_writer_group() -> None:
    engine, batch = _setup("ln_mlp")
    values = batch.clean_outputs[:, :, 0:2]
    for forward in (run_forward, reference_forward):
        with pytest.raises(EngineError, match="one whole writer group"):
            forward(engine.weights, engine.graph, batch.embedded, batch.task.positions,
                    override=Override(0, 2, values))  # fmt: skip
