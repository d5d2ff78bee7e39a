"""Path patching against TransformerLens's direct path patching, a hand-made hook and the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformer_lens import patching as tl_patching
from transformer_lens.model_bridge import TransformerBridge

from circuitreg.schema.names import Receiver
from circuitreg.workers.engine import InterventionEngine
from circuitreg.workers.graph import ComputationalGraph, GraphError
from circuitreg.workers.methods.base import ConfigError
from circuitreg.workers.methods.patching import ActivationPatchingConfig, activation_patching
from circuitreg.workers.methods.patching_path import (
    PathPatchingConfig,
    path_patch,
    path_patching,
    receiver_slots,
)
from circuitreg.workers.methods.registry import default_registry
from circuitreg.workers.tasks.base import TaskData

VOCAB, SEQ, N = 50, 8, 6


pytestmark = pytest.mark.usefixtures("one_thread")


def _native(mlp: bool = False) -> TransformerBridge:
    cfg: dict[str, Any] = dict(
        n_layers=2, d_model=64, n_heads=4, d_head=16, d_vocab=VOCAB, n_ctx=32,
        attn_only=not mlp, act_fn="gelu", normalization_type="LN" if mlp else None, seed=0,
    )  # fmt: skip
    if mlp:
        cfg["d_mlp"] = 128
    model = TransformerBridge.boot_native(cfg)
    model.eval()
    return model


@pytest.fixture(scope="module")
def gpt2_bridge(tmp_path_factory: pytest.TempPathFactory) -> TransformerBridge:
    """A tiny GPT-2 (LayerNorm, MLPs) saved and loaded the Hugging Face way: its attention has
    the split q/k/v input that TransformerLens's direct path patching needs."""
    from transformers import GPT2Config, GPT2LMHeadModel

    path = Path(tmp_path_factory.mktemp("gpt2"))
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_head=4, n_embd=64, vocab_size=VOCAB, n_positions=32, initializer_range=0.3
    )
    GPT2LMHeadModel(config).save_pretrained(path)
    model = TransformerBridge.boot_transformers(str(path), device="cpu")
    model.eval()
    return model


def _task(seed: int = 1) -> TaskData:
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, VOCAB, (N, SEQ), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 2:5] = torch.randint(0, VOCAB, (N, 3), generator=gen)
    return TaskData(
        name="handmade",
        spec={},
        clean=clean,
        corrupted=corrupted,
        positions=torch.full((N, 1), SEQ - 1),
        answers=torch.randint(0, VOCAB, (N, 1), generator=gen),
        distractors=torch.randint(0, VOCAB, (N, 1), generator=gen),
        corruption="positions 2-4 resampled",
    )


def _logit_diff(task: TaskData) -> Any:
    def metric(logits: torch.Tensor) -> torch.Tensor:
        last = logits[:, -1]
        assert task.distractors is not None
        return (last.gather(-1, task.answers) - last.gather(-1, task.distractors)).mean()

    return metric


@pytest.mark.parametrize("component", ["q", "k", "v"])
def test_path_patching_matches_transformer_lens_direct_path_patching(
    gpt2_bridge: TransformerBridge, component: str
) -> None:
    model, task = gpt2_bridge, _task()
    metric = _logit_diff(task)
    clean_cache = model.run_with_cache(task.clean)[1]
    corrupted_cache = model.run_with_cache(task.corrupted)[1]
    # TransformerLens adds (its "clean" - its "corrupted") source write to the run it is
    # given: run the clean prompts with the caches swapped to patch corrupted into clean.
    reference = tl_patching.get_act_patch_direct_path(
        model, task.clean, corrupted_cache, clean_cache, metric, 0, 1,
        component=component, verbose=False,  # type: ignore[arg-type]
    )  # fmt: skip
    effects = reference[1] - float(metric(model(task.clean)).detach())
    graph = ComputationalGraph.from_model(model)
    config = PathPatchingConfig(
        senders="a0.h1", receivers=",".join(f"a1.h{h}<{component}>" for h in range(4))
    )
    result = path_patching(model, task, graph, config)
    got = torch.stack(
        [result.edge_scores[graph.edge_index(f"a0.h1->a1.h{h}<{component}>")] for h in range(4)]
    )
    torch.testing.assert_close(got, effects.float(), atol=1e-4, rtol=0)
    assert effects.abs().max() > 1e-2
    # The sender's joint effect on all four receivers is one more patch, not the sum.
    engine = InterventionEngine(model, graph, task)
    joint = path_patch(engine, ["a0.h1"], receiver_slots(graph, config.receivers))
    assert float(result.node_scores[graph.node_index("a0.h1")]) == pytest.approx(float(joint[0]))


def test_sender_to_key_equals_a_hand_written_key_hook_and_the_engine_edge_patch() -> None:
    """a0.h1 -> a1.h2<k> on an attention-only model without norms: a1.h2's keys are
    recomputed from the clean residual with a0.h1's write swapped for its corrupted one."""
    model, task = _native(), _task()
    with torch.no_grad():  # sharpen the random init's nearly uniform attention
        for name, param in model.named_parameters():
            if ".q." in name or ".k." in name:
                param.mul_(20)
    metric = _logit_diff(task)
    clean_cache = model.run_with_cache(task.clean)[1]
    corrupted_cache = model.run_with_cache(task.corrupted)[1]
    z = "blocks.0.attn.hook_z"
    delta = (corrupted_cache[z][:, :, 1] - clean_cache[z][:, :, 1]) @ model.W_O[0, 1]
    keys = (clean_cache["blocks.1.hook_resid_pre"] + delta) @ model.W_K[1, 2] + model.b_K[1, 2]

    def swap_keys(k: torch.Tensor, hook: Any) -> torch.Tensor:
        k = k.clone()
        k[:, :, 2] = keys
        return k

    patched = model.run_with_hooks(task.clean, fwd_hooks=[("blocks.1.attn.hook_k", swap_keys)])
    expected = float((metric(patched) - metric(model(task.clean))).detach())

    graph = ComputationalGraph.from_model(model)
    engine = InterventionEngine(model, graph, task)
    via_path = float(path_patch(engine, ["a0.h1"], [("a1.h2", Receiver.K)])[0])
    single_edge = torch.zeros(1, graph.n_edges)
    single_edge[0, graph.edge_index("a0.h1->a1.h2<k>")] = 1
    via_edge = float(engine.evaluate(single_edge)[0]) - engine.clean_metric()
    assert via_path == pytest.approx(expected, abs=2e-6)
    assert via_edge == pytest.approx(expected, abs=2e-6)
    assert abs(expected) > 5e-5


def test_senders_batched_in_one_pass_equal_one_at_a_time() -> None:
    model, task = _native(mlp=True), _task()
    graph = ComputationalGraph.from_model(model)
    engine = InterventionEngine(model, graph, task, set_batch=8)
    receivers = [("a1.h0", Receiver.Q), ("m1", None), ("logits", None)]
    senders = ["input", "a0.h0", "a0.h3", "m0"]
    batched = path_patch(engine, senders, receivers)
    alone = torch.cat([path_patch(engine, [s], receivers) for s in senders])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)
    # The input differs from the corrupted prompt only before the read position, where
    # nothing a1.h0's query, m1 or the logits read there depends on it: exactly no effect.
    assert float(batched[0]) == 0.0 and batched[1:].abs().min() > 1e-3


def test_every_receiver_at_once_is_activation_patching_of_the_sender() -> None:
    """A sender patched into all its readers is the node patched: the engine's path patching
    and the hook-based activation patching must agree."""
    model, task = _native(mlp=True), _task()
    graph = ComputationalGraph.from_model(model)
    paths = path_patching(model, task, graph, PathPatchingConfig(set_batch=32))
    nodes = activation_patching(model, task, graph, ActivationPatchingConfig(sets_per_forward=16))
    assert paths.node_scores is not None and nodes.node_scores is not None
    torch.testing.assert_close(paths.node_scores, nodes.node_scores, atol=1e-4, rtol=0)
    # With every receiver, each edge is scored by its own single-edge patch.
    engine = InterventionEngine(model, graph, task)
    picks = [graph.edge_index(e) for e in ("input->a0.h2<v>", "a0.h1->m1", "m1->logits")]
    rows = torch.zeros(len(picks), graph.n_edges)
    rows[torch.arange(len(picks)), picks] = 1
    single = engine.evaluate(rows).float() - engine.clean_metric()
    torch.testing.assert_close(paths.edge_scores[picks], single, atol=1e-5, rtol=0)


def test_bad_receivers_and_senders_are_refused_with_the_reason() -> None:
    model, task = _native(), _task()
    graph = ComputationalGraph.from_model(model)

    def run(**options: str) -> None:
        path_patching(model, task, graph, PathPatchingConfig(**options))  # type: ignore[arg-type]

    with pytest.raises(ConfigError, match="q/k/v"):
        run(receivers="logits<q>")
    with pytest.raises(GraphError, match=r"a7\.h0"):
        run(receivers="a7.h0<k>")
    with pytest.raises(ConfigError, match="reads nothing"):
        run(receivers="input")
    with pytest.raises(ConfigError, match="feeds none"):
        run(receivers="a0.h1<q>", senders="a1.h0")
    with pytest.raises(ConfigError, match="logits node writes nothing"):
        run(receivers="logits", senders="logits")
    assert receiver_slots(graph, "a1.h0") == [
        ("a1.h0", Receiver.Q), ("a1.h0", Receiver.K), ("a1.h0", Receiver.V)
    ]  # fmt: skip


def test_patching_methods_are_registered() -> None:
    registry = default_registry()
    assert registry.get("path_patching").config_cls is PathPatchingConfig
    assert registry.get("activation_patching").config_cls is ActivationPatchingConfig
