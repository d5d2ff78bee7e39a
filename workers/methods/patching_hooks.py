"""Stacked node patches through TransformerLens hooks: many patched runs in one forward.

The prompt batch ``[N, T]`` is repeated ``K`` times along the batch dimension; copy ``k``
gets patch ``k``. Each hook involved gets one boolean ``where`` tensor that says, per copy,
position and head, whether the activation is taken from the source, so a whole chunk of
patches costs one forward of ``K * N`` sequences instead of ``K`` forwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from circuitreg.schema.names import ComponentKind, parse_node
from circuitreg.workers.ablation import dataset_mean
from circuitreg.workers.graph import ComputationalGraph, GraphError
from circuitreg.workers.tasks.base import TaskData

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

EMBED_HOOKS = ("hook_embed", "hook_pos_embed")


@dataclass(frozen=True, slots=True)
class NodePatch:
    """Patch one node's output, at one token position or (``None``) at all positions."""

    node: str
    position: int | None = None


def check_graph_matches(model: Any, graph: ComputationalGraph) -> None:
    """Raise ``GraphError`` unless ``graph`` has the model's layers, heads and MLPs."""
    cfg = model.cfg
    shape = (int(cfg.n_layers), int(cfg.n_heads), bool(getattr(cfg, "attn_only", False)))
    if shape != (graph.n_layers, graph.n_heads, graph.attn_only):
        raise GraphError(
            f"graph ({graph.describe()}) does not match the model "
            f"(n_layers={shape[0]}, n_heads={shape[1]}, attn_only={shape[2]})"
        )


def hooks_for_node(node: str) -> tuple[str, ...]:
    """The hooks whose values are the node's output (two for the input: token and position)."""
    parsed = parse_node(node)
    if parsed.kind is ComponentKind.EMBED:
        return EMBED_HOOKS
    if parsed.kind is ComponentKind.ATTN_HEAD:
        return (f"blocks.{parsed.layer}.attn.hook_z",)
    if parsed.kind is ComponentKind.MLP:
        return (f"blocks.{parsed.layer}.hook_mlp_out",)
    raise GraphError(f"node {node!r} has no output to patch (only input, heads and MLPs do)")


def read_positions(logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Logits at the read positions: ``[..., N, T, V]`` and ``[N, P]`` -> ``[..., N, P, V]``."""
    index = positions.unsqueeze(-1).expand(*positions.shape, logits.shape[-1])
    index = index.expand(*logits.shape[:-3], *index.shape)
    return logits.gather(-2, index)


def run_node_patches(
    model: TransformerBridge,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    sources: dict[str, torch.Tensor],
    patches: Sequence[NodePatch],
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits at the read positions ``[K, N, P, V]``, copy ``k`` with ``patches[k]`` applied.

    ``sources[hook]`` is the value patched in, ``[N, T, ...]`` or broadcastable to it (a
    dataset mean ``[1, T, ...]``, zeros); it must hold every hook the patches touch. With
    ``labels`` ``[N, T]`` (each token's position label, ``PositionMap.assign``) a patch's
    ``position`` is a label: the node is patched at each prompt's own tokens of it.
    """
    n, seq_len = tokens.shape
    k = len(patches)
    if k == 0:
        raise ValueError("run_node_patches needs at least one patch")
    n_positions = seq_len if labels is None else int(labels.max()) + 1
    wheres: dict[str, torch.Tensor] = {}
    for i, patch in enumerate(patches):
        if patch.position is not None and not 0 <= patch.position < n_positions:
            raise ValueError(f"patch position {patch.position} is outside 0..{n_positions - 1}")
        parsed = parse_node(patch.node)
        for hook in hooks_for_node(patch.node):
            if hook not in sources:
                raise KeyError(f"no source activation for hook {hook!r} (node {patch.node})")
            src = sources[hook]
            n_heads = src.shape[2] if parsed.kind is ComponentKind.ATTN_HEAD else 1
            rows = 1 if labels is None else n  # [K, N|1, T, H]: per prompt where labelled
            where = wheres.setdefault(
                hook,
                torch.zeros(k, rows, seq_len, n_heads, dtype=torch.bool, device=tokens.device),
            )
            head = parsed.head if parsed.kind is ComponentKind.ATTN_HEAD else 0
            if patch.position is None:
                where[i, :, :, head] = True
            elif labels is None:
                where[i, :, patch.position, head] = True
            else:
                where[i, :, :, head] |= labels.to(tokens.device) == patch.position

    def make_hook(hook: str) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        where = wheres[hook]
        src = sources[hook]

        def patch_hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
            stacked = act.view(k, n, *act.shape[1:])
            mask = where if stacked.ndim == 5 else where[..., 0]  # heads: [K, N, T, H, d_head]
            mask = mask.unsqueeze(-1)
            patched = torch.where(mask, src.unsqueeze(0).to(act.dtype), stacked)
            return patched.reshape(act.shape)

        return patch_hook

    stacked_tokens = tokens.repeat(k, 1)
    logits = model.run_with_hooks(
        stacked_tokens, fwd_hooks=[(hook, make_hook(hook)) for hook in wheres]
    )
    return read_positions(logits.view(k, n, seq_len, -1), positions)


def ablation_sources(
    model: TransformerBridge,
    batch: TaskData,
    hook_names: Sequence[str],
    ablation: str,
    clean_values: dict[str, torch.Tensor],
    dataset_means: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], int]:
    """What an ablated node outputs on ``batch``, per hook, and the forwards it took.

    resample: the corrupted run's value; zero: zeros shaped like one clean example's value;
    mean: ``dataset_means`` (see ``mean_activations``).
    """
    if ablation == "resample":
        _, cache = model.run_with_cache(batch.corrupted, names_filter=lambda h: h in hook_names)
        return {h: cache[h] for h in hook_names}, 1
    if ablation == "zero":
        return {h: torch.zeros_like(clean_values[h][:1]) for h in hook_names}, 0
    if ablation == "mean":
        if dataset_means is None:
            raise ValueError("mean ablation needs the dataset means (mean_activations)")
        return {h: dataset_means[h] for h in hook_names}, 0
    raise ValueError(f"ablation {ablation!r} is not resample, zero or mean")


def mean_activations(
    model: TransformerBridge, task: TaskData, hook_names: Sequence[str], batch_size: int
) -> tuple[dict[str, torch.Tensor], int]:
    """Token-wise means ``[1, T, ...]`` of the hooks over the task's clean prompts.

    The same definition as ``circuitreg.workers.ablation.dataset_mean`` (which this reuses, on
    the hooks' values flattened side by side), so the engine's mean ablation and this one
    patch in the same values. Returns the means and the number of forwards run.
    """
    shapes: dict[str, torch.Size] = {}
    runs = [0]

    def run(tokens: torch.Tensor) -> torch.Tensor:
        runs[0] += 1
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=lambda h: h in hook_names)
        n, t = tokens.shape
        for h in hook_names:
            shapes[h] = cache[h].shape[2:]
        return torch.cat([cache[h].reshape(n, t, -1) for h in hook_names], dim=-1)

    flat = dataset_mean(run, (b.clean for b in task.batches(batch_size)))
    out: dict[str, torch.Tensor] = {}
    offset = 0
    for h in hook_names:
        width = int(torch.Size(shapes[h]).numel())
        out[h] = flat[..., offset : offset + width].reshape(1, flat.shape[1], *shapes[h])
        offset += width
    return out, runs[0]
