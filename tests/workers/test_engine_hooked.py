"""The batched engine and the plain hooked loop (one bridge forward per set) agree exactly.

Two implementations of exact edge patching that share no forward code: the engine's own
residual decomposition and the bridge's forward with recording/rewriting hooks. They must
agree on many-edge sets, where patched edges change what later writers compute, for every
ablation, on native bridges and on a Hugging Face architecture.
"""

from __future__ import annotations

import tempfile
from typing import Any

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge
from transformers import GPT2Config, GPT2LMHeadModel

from circuitreg.workers.engine import EngineError, HookedEdgePatcher, InterventionEngine
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.tasks.induction import induction_task

from .tiny_bridges import ATTN_ONLY, WITH_MLP

THREE_LAYER_MLP = dict(WITH_MLP, n_layers=3)  # a patched edge reaches two later layers

pytestmark = pytest.mark.usefixtures("one_thread")


def _hf_gpt2() -> Any:
    """A randomly initialised GPT-2 saved and loaded the way hub checkpoints are."""
    config = GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=40, n_positions=24,
                        bos_token_id=0, eos_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as directory:
        GPT2LMHeadModel(config).save_pretrained(directory)
        model = TransformerBridge.boot_transformers(directory, device="cpu")
    model.eval()
    return model


def _random_sets(graph: ComputationalGraph, n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(n, graph.n_edges, generator=generator) < 0.3).float()


@pytest.mark.parametrize("ablation", ["resample", "zero", "mean"])
@pytest.mark.parametrize("cfg", [ATTN_ONLY, THREE_LAYER_MLP], ids=["attn_only", "ln_mlp"])
def test_engine_equals_hooked_loop_on_many_edge_sets(cfg: dict[str, Any], ablation: str) -> None:
    model = TransformerBridge.boot_native(cfg)
    graph = ComputationalGraph.from_model(model)
    task = induction_task(seq_len=5, n=6, d_vocab=40, seed=3)
    sets = _random_sets(graph, 6, seed=len(ablation))
    engine = InterventionEngine(model, graph, task, ablation=ablation, set_batch=4)
    hooked = HookedEdgePatcher(model, graph, task, ablation=ablation)
    ours, theirs = engine.evaluate(sets), hooked.evaluate(sets)
    assert (ours - theirs).abs().max() < 1e-4
    assert hooked.n_forward >= len(sets)  # one bridge forward per set
    assert float(theirs.max() - theirs.min()) > 1e-3, "the sets must differ for this to test"


def test_engine_equals_hooked_loop_on_a_hugging_face_gpt2() -> None:
    model = _hf_gpt2()
    graph = ComputationalGraph.from_model(model)
    task = induction_task(seq_len=5, n=6, d_vocab=40, seed=3)
    sets = _random_sets(graph, 5, seed=7)
    engine = InterventionEngine(model, graph, task, metric="kl")
    hooked = HookedEdgePatcher(model, graph, task, metric="kl")
    ours, theirs = engine.evaluate(sets), hooked.evaluate(sets)
    assert (ours - theirs).abs().max() < 1e-6
    assert float(theirs.min()) > 1e-5, "every set must move the output for this to test"


def test_hooked_loop_with_every_edge_patched_is_the_corrupted_model() -> None:
    model = TransformerBridge.boot_native(THREE_LAYER_MLP)
    graph = ComputationalGraph.from_model(model)
    task = induction_task(seq_len=5, n=6, d_vocab=40, seed=3)
    hooked = HookedEdgePatcher(model, graph, task, metric="kl")
    with torch.no_grad():
        corrupted = model(task.corrupted)
    rows = torch.arange(task.n_examples)[:, None]
    logprobs = torch.log_softmax(corrupted[rows, task.positions], dim=-1)
    clean = hooked.clean_logprobs
    expected = (clean.exp() * (clean - logprobs)).sum(-1).mean()
    assert float(hooked.evaluate(torch.ones(graph.n_edges))[0]) == pytest.approx(
        float(expected), rel=1e-4
    )
    assert float(hooked.evaluate(torch.zeros(graph.n_edges))[0]) == pytest.approx(0.0, abs=1e-6)


def test_hooked_loop_refuses_a_graph_of_another_model() -> None:
    model = TransformerBridge.boot_native(ATTN_ONLY)
    task = induction_task(seq_len=4, n=2, d_vocab=40)
    with pytest.raises(EngineError, match="does not match"):
        HookedEdgePatcher(model, ComputationalGraph(n_layers=3, n_heads=4), task)
    parallel = ComputationalGraph(n_layers=2, n_heads=4, parallel_attn_mlp=True)
    with pytest.raises(EngineError, match="parallel"):
        HookedEdgePatcher(model, parallel, task)
