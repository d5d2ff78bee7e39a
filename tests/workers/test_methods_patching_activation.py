"""Node-level activation patching against TransformerLens's own patching and exact identities."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
import torch
from transformer_lens import patching as tl_patching
from transformer_lens.model_bridge import TransformerBridge

from circuitreg.workers.graph import ComputationalGraph, GraphError
from circuitreg.workers.methods.base import ConfigError
from circuitreg.workers.methods.patching import ActivationPatchingConfig, activation_patching
from circuitreg.workers.tasks.base import TaskData

VOCAB, SEQ, N = 50, 8, 6


pytestmark = pytest.mark.usefixtures("one_thread")


def _bridge(n_layers: int, *, mlp: bool = False, seed: int = 0) -> TransformerBridge:
    cfg: dict[str, Any] = dict(
        n_layers=n_layers, d_model=64, n_heads=4, d_head=16, d_vocab=VOCAB, n_ctx=32,
        attn_only=not mlp, act_fn="gelu", normalization_type="LN" if mlp else None, seed=seed,
    )  # fmt: skip
    if mlp:
        cfg["d_mlp"] = 128
    model = TransformerBridge.boot_native(cfg)
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
        right = last.gather(-1, task.answers).squeeze(-1)
        wrong = last.gather(-1, task.distractors).squeeze(-1)
        return (right - wrong).mean()

    return metric


def _value(tensor: torch.Tensor) -> float:
    return float(tensor.detach())


def _cache(model: TransformerBridge, tokens: torch.Tensor) -> Any:
    return model.run_with_cache(tokens)[1]


def _scores(model: TransformerBridge, task: TaskData, **options: Any) -> Any:
    positions = SEQ if options.get("per_position") else None
    graph = ComputationalGraph.from_model(model, positions=positions)
    return graph, activation_patching(model, task, graph, ActivationPatchingConfig(**options))


def _tl_sweep(
    model: TransformerBridge,
    run_tokens: torch.Tensor,
    source: Any,
    metric: Any,
    activation: str,
    setter: Any,
    cells: list[tuple[int, ...]],
    columns: list[str],
) -> torch.Tensor:
    """TransformerLens's generic patcher on a few cells (each cell is one TL forward)."""
    return tl_patching.generic_activation_patch(
        model,
        run_tokens,
        source,
        metric,
        setter,
        activation,
        index_df=pd.DataFrame(cells, columns=columns),
    )


def test_patching_heads_all_positions_matches_transformer_lens_noising() -> None:
    model, task = _bridge(2), _task()
    graph, result = _scores(model, task, components="heads", sets_per_forward=3)
    metric = _logit_diff(task)
    cells = [(layer, head) for layer in range(2) for head in range(4)]
    # TransformerLens patches its "clean" cache into the run it is given: run the clean
    # prompts and hand it the corrupted cache to get noising.
    reference = _tl_sweep(
        model, task.clean, _cache(model, task.corrupted), metric, "z",
        tl_patching.layer_head_vector_patch_setter, cells, ["layer", "head"],
    )  # fmt: skip
    clean_metric = _value(metric(model(task.clean)))
    got = [_value(result.node_scores[graph.node_index(f"a{lyr}.h{h}")]) for lyr, h in cells]
    torch.testing.assert_close(torch.tensor(got), reference - clean_metric, atol=1e-4, rtol=0)
    assert result.extra["unpatched_metric"] == pytest.approx(clean_metric, abs=1e-4)
    assert result.node_scores.abs().max() > 1e-3, "the corruption must move some head"


def test_patching_heads_per_position_matches_transformer_lens_denoising() -> None:
    model, task = _bridge(2), _task()
    graph, result = _scores(
        model, task, components="heads", per_position=True, direction="denoising"
    )
    metric = _logit_diff(task)
    cells = [(0, 2, 1), (0, 3, 3), (0, 7, 0), (1, 4, 2), (1, 7, 1), (1, 7, 3)]
    reference = _tl_sweep(
        model, task.corrupted, _cache(model, task.clean), metric, "z",
        tl_patching.layer_pos_head_vector_patch_setter, cells, ["layer", "pos", "head"],
    )  # fmt: skip
    corrupted_metric = _value(metric(model(task.corrupted)))
    assert result.node_scores.shape == (SEQ, graph.n_nodes)
    assert result.edge_scores.shape == (SEQ, graph.n_edges)
    got = [_value(result.node_scores[p, graph.node_index(f"a{lyr}.h{h}")]) for lyr, p, h in cells]
    torch.testing.assert_close(torch.tensor(got), reference - corrupted_metric, atol=1e-4, rtol=0)
    assert (reference - corrupted_metric).abs().max() > 1e-3


def test_patching_mlps_per_position_matches_transformer_lens_on_layernorm_model() -> None:
    model, task = _bridge(2, mlp=True), _task()
    graph, result = _scores(model, task, components="mlps", per_position=True)
    metric = _logit_diff(task)
    cells = [(0, 1), (0, 3), (1, 4), (1, 7)]
    reference = _tl_sweep(
        model, task.clean, _cache(model, task.corrupted), metric, "mlp_out",
        tl_patching.layer_pos_patch_setter, cells, ["layer", "pos"],
    )  # fmt: skip
    clean_metric = _value(metric(model(task.clean)))
    got = [_value(result.node_scores[p, graph.node_index(f"m{lyr}")]) for lyr, p in cells]
    torch.testing.assert_close(torch.tensor(got), reference - clean_metric, atol=1e-4, rtol=0)
    assert (reference - clean_metric).abs().max() > 1e-3


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_zero_and_mean_ablation_match_transformer_lens_with_that_cache(ablation: str) -> None:
    model, task = _bridge(2), _task()
    graph, result = _scores(model, task, components="heads", ablation=ablation)
    metric = _logit_diff(task)
    clean_cache = _cache(model, task.clean)
    z_names = [f"blocks.{layer}.attn.hook_z" for layer in range(2)]
    if ablation == "zero":
        source = {k: torch.zeros_like(clean_cache[k]) for k in z_names}
    else:  # token-wise mean over the clean prompts, the same for every example
        source = {
            k: clean_cache[k].mean(0, keepdim=True).expand_as(clean_cache[k]) for k in z_names
        }
    cells = [(0, 0), (0, 3), (1, 1), (1, 2)]
    reference = _tl_sweep(
        model, task.clean, source, metric, "z",
        tl_patching.layer_head_vector_patch_setter, cells, ["layer", "head"],
    )  # fmt: skip
    clean_metric = _value(metric(model(task.clean)))
    got = [_value(result.node_scores[graph.node_index(f"a{lyr}.h{h}")]) for lyr, h in cells]
    torch.testing.assert_close(torch.tensor(got), reference - clean_metric, atol=1e-4, rtol=0)


def test_patching_the_input_everywhere_is_the_corrupted_run() -> None:
    model, task = _bridge(2, mlp=True), _task()
    graph, result = _scores(model, task)
    metric = _logit_diff(task)
    expected = _value(metric(model(task.corrupted)) - metric(model(task.clean)))
    assert float(result.node_scores[graph.node_index("input")]) == pytest.approx(expected, abs=1e-4)


def test_one_layer_head_effects_plus_direct_path_add_up_to_the_corrupted_run() -> None:
    """In one attention layer without norms, heads do not interact and logits are linear in
    the residual, so the head effects and the embedding's direct effect sum to the whole
    corrupted-minus-clean difference."""
    model, task = _bridge(1), _task()
    graph, result = _scores(model, task, components="heads")
    metric = _logit_diff(task)
    total = _value(metric(model(task.corrupted)) - metric(model(task.clean)))
    assert task.distractors is not None
    direction = model.W_U[:, task.answers[:, 0]] - model.W_U[:, task.distractors[:, 0]]  # [d, N]
    embed_change = model.W_E[task.corrupted[:, -1]] - model.W_E[task.clean[:, -1]]  # [N, d]
    direct = float((embed_change * direction.T).sum(-1).mean().detach())
    heads = [graph.node_index(f"a0.h{h}") for h in range(4)]
    assert float(result.node_scores[heads].sum()) == pytest.approx(total - direct, abs=1e-4)
    assert abs(total - direct) > 1e-3


def test_last_layer_heads_act_only_at_the_read_position() -> None:
    model, task = _bridge(2), _task()
    graph, result = _scores(model, task, components="heads", per_position=True)
    last_layer = [graph.node_index(f"a1.h{h}") for h in range(4)]
    assert result.node_scores[: SEQ - 1, last_layer].abs().max() == 0
    assert result.node_scores[SEQ - 1, last_layer].abs().max() > 1e-4


def test_edges_inherit_their_source_node_score() -> None:
    model, task = _bridge(2), _task()
    graph, result = _scores(model, task)
    for edge in ("a0.h1->a1.h2<k>", "a0.h1->logits", "input->a1.h0<q>"):
        source = edge.split("->")[0]
        assert float(result.edge_scores[graph.edge_index(edge)]) == float(
            result.node_scores[graph.node_index(source)]
        )
    assert float(result.node_scores[graph.node_index("logits")]) == 0.0


def test_bad_settings_are_refused_with_the_reason() -> None:
    model, task = _bridge(2), _task()
    with pytest.raises(ConfigError, match="denoising"):
        ActivationPatchingConfig(direction="denoising", ablation="zero")
    with pytest.raises(ConfigError, match="positions=8"):
        activation_patching(
            model,
            task,
            ComputationalGraph.from_model(model),
            ActivationPatchingConfig(per_position=True),
        )
    with pytest.raises(ConfigError, match="mlps"):
        activation_patching(
            model, task, ComputationalGraph.from_model(model),
            ActivationPatchingConfig(components="mlps"),
        )  # fmt: skip
    with pytest.raises(GraphError, match="does not match"):
        activation_patching(
            model, task, ComputationalGraph(n_layers=3, n_heads=4, attn_only=True),
            ActivationPatchingConfig(),
        )  # fmt: skip
