"""Node-level activation patching: heads, MLPs and the input, over all positions or per position.

Patching a node replaces its whole output (a head's ``hook_z``, which is exactly its write
``z @ W_O`` before the layer's shared bias; an MLP's ``hook_mlp_out``; the input's token and
position embeddings) and lets everything downstream recompute. The score of a node is
``mean metric(patched) - mean metric(unpatched)`` over the task's examples.

* ``direction="noising"`` (default) runs the clean prompts and patches in the ablated value
  (the corrupted run for resample ablation, zeros, or the dataset mean): a node that matters
  moves the metric away from the clean value.
* ``direction="denoising"`` runs the corrupted prompts and patches in the clean value (the
  direction of ``transformer_lens.patching``): a node that suffices moves the metric towards
  the clean value. It needs resample ablation, since there is no "zero run" to restore.

``transformer_lens.patching.generic_activation_patch`` is the building block this mirrors (the
tests use it as the reference implementation): it runs one forward per patched index and
patches clean into corrupted only. This module adds what discovery here needs: many patches
per forward (the prompt batch is stacked ``sets_per_forward`` times along the batch dimension
and each copy gets its own patch through one boolean ``where`` per hook), both directions,
zero and mean ablation, MLPs over all positions, canonical node names and a ``ScoreResult``.

Edge scores are derived, as stated in ``ScoreResult.extra["edge_scores"]``: every edge gets the
score of its *source* node, because patching a node is exactly patching every edge leaving it
(``ComputationalGraph.outgoing_edges``). Edges leave no ``logits`` node, so none is scored.

Positional runs (``positions="index"`` or ``"spans"``, issue 18): the positional analogue of
patching a node is patching its output at the tokens of one position label (token ``q``, or
each prompt's own tokens of span ``q``, ``other`` for the tokens of no span), which is
exactly patching every edge leaving it at that label (the tests hold it to the engine's
positional edge patches). ``position_scores`` ``[n_edges, Q]`` are those effects at each
edge's source; ``edge_scores`` and ``node_scores`` stay each node patched at every position
at once, the unpositioned run's scores (patch effects do not add up over positions, so they
are measured, not summed). A run costs ``Q + 1`` patches per node, stacked as the
unpositioned ones are. ``per_position`` is the older index-only table (``[T, n_nodes]``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from pydantic import Field

from circuitreg.schema.names import ComponentKind, parse_node
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.base import ConfigError, MethodConfig, ProgressFn, ScoreResult
from circuitreg.workers.methods.eap import position_map
from circuitreg.workers.methods.patching_hooks import (
    NodePatch,
    ablation_sources,
    check_graph_matches,
    hooks_for_node,
    mean_activations,
    read_positions,
    run_node_patches,
)
from circuitreg.workers.methods.registry import register_method
from circuitreg.workers.metrics import Metric, resolve_metric
from circuitreg.workers.positions import PositionMap, PositionMode
from circuitreg.workers.tasks.base import TaskData

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

ComponentChoice = Literal["all", "heads", "mlps"]
Direction = Literal["noising", "denoising"]


class ActivationPatchingConfig(MethodConfig):
    """Options of node-level activation patching."""

    method_name: ClassVar[str] = "activation_patching"

    components: ComponentChoice = Field(
        default="all", description="all (input, heads, MLPs), heads or mlps"
    )
    per_position: bool = Field(default=False, description="patch each token position separately")
    direction: Direction = Field(
        default="noising",
        description="noising: ablated into clean run; denoising: clean into corrupted",
    )
    sets_per_forward: int = Field(
        default=16, ge=1, description="patches evaluated together in one stacked forward"
    )
    positions: PositionMode | None = Field(
        default=None,
        description="index or spans: also patch every node at every token index, or at each "
        "prompt's tokens of each task span and 'other' (ScoreResult.position_scores "
        "[n_edges, Q], each edge its source node's score there); edge_scores stay the "
        "all-positions patch",
    )

    def check(self) -> None:
        super().check()
        if self.per_position and self.positions == "spans":
            raise ConfigError(
                "per_position patches token indices; with positions='spans' leave it off "
                "(position_scores hold the spans)"
            )
        if self.direction == "denoising" and self.ablation != "resample":
            raise ConfigError(
                f"denoising patches clean activations into the corrupted run, so it needs "
                f"ablation='resample', not {self.ablation!r}"
            )


def patched_nodes(graph: ComputationalGraph, components: ComponentChoice) -> list[str]:
    """The nodes a sweep patches, in topological order."""
    kinds = {
        "all": {ComponentKind.EMBED, ComponentKind.ATTN_HEAD, ComponentKind.MLP},
        "heads": {ComponentKind.ATTN_HEAD},
        "mlps": {ComponentKind.MLP},
    }[components]
    nodes = [n for n in graph.writers if parse_node(n).kind in kinds]
    if not nodes:
        raise ConfigError(f"components={components!r}: this graph ({graph.describe()}) has none")
    return nodes


@register_method(
    ActivationPatchingConfig.method_name,
    config=ActivationPatchingConfig,
    description="Node activation patching (heads, MLPs, input; all positions or per position)",
)
def activation_patching(
    model: TransformerBridge,
    task: TaskData,
    graph: ComputationalGraph,
    config: ActivationPatchingConfig,
    progress: ProgressFn | None = None,
) -> ScoreResult:
    """Score every node by patching it alone; edges inherit their source node's score.

    Returns ``node_scores`` ``[n_nodes]`` (``[T, n_nodes]`` with ``per_position``) in
    ``graph.nodes`` order, zero for nodes not patched (``logits``, and those excluded by
    ``components``, which ``extra["patched_nodes"]`` lists). With ``per_position`` the graph
    must be position-resolved (``graph.positions == task.seq_len``), and ``edge_scores`` is
    ``[T, n_edges]``. With ``positions`` the result also has ``position_scores``
    ``[n_edges, Q]`` and ``positions`` (the map); see the module docstring.
    """
    if not isinstance(config, ActivationPatchingConfig):
        raise ConfigError(f"activation_patching needs an ActivationPatchingConfig, not {config!r}")
    check_graph_matches(model, graph)
    seq_len = task.seq_len
    if config.per_position and graph.positions != seq_len:
        raise ConfigError(
            f"per_position scores are [positions, edges]: build the graph with positions="
            f"{seq_len} (the task's sequence length), not {graph.positions}"
        )
    started = time.perf_counter()
    metric = resolve_metric(config.metric)
    device = next(model.parameters()).device
    task = task.to(device)
    nodes = patched_nodes(graph, config.components)
    labelled = position_map(graph, task, config.positions)
    positions: Sequence[int | None] = range(seq_len) if config.per_position else [None]
    patches = [NodePatch(node, pos) for pos in positions for node in nodes]
    # each node at each label too, after the unpositioned patches
    q = 0 if labelled is None else labelled.size
    per_label = [NodePatch(n, label) for label in range(q) for n in nodes]

    totals, base_total, n_forward = _sweep(
        model, task, nodes, patches + per_label, config, metric, progress, labelled
    )
    effects = (totals - base_total) / task.n_examples
    node_scores = _node_score_table(
        graph, patches, effects[: len(patches)], seq_len if config.per_position else None
    )
    edge_scores = node_scores[..., graph.edge_source]
    position_scores = None
    if per_label:
        at_labels = _node_score_table(graph, per_label, effects[len(patches) :], q)
        position_scores = at_labels[:, graph.edge_source].T.contiguous().float()  # [E, Q]
    return ScoreResult(
        edge_scores=edge_scores.float(),
        method=ActivationPatchingConfig.method_name,
        params=config.to_dict(),
        n_forward=n_forward,
        n_backward=0,
        seconds=time.perf_counter() - started,
        node_scores=node_scores.float(),
        extra={
            "edge_scores": "score of the edge's source node (patching a node patches its edges)",
            "patched_nodes": nodes,
            "unpatched_metric": base_total / task.n_examples,
            "direction": config.direction,
            "corruption": task.corruption,
        },
        position_scores=position_scores,
        positions=labelled,
    )


def _sweep(
    model: TransformerBridge,
    task: TaskData,
    nodes: list[str],
    patches: list[NodePatch],
    config: ActivationPatchingConfig,
    metric: Metric,
    progress: ProgressFn | None,
    labelled: PositionMap | None = None,
) -> tuple[torch.Tensor, float, int]:
    """Summed metric per patch over the prompts, the unpatched sum, and the forwards spent.

    ``sets_per_forward`` patches share one stacked forward per batch of prompts. In spans
    mode (``labelled``) a patch's position is a label, read per batch (each prompt's own
    tokens of it); by index it is the token itself.
    """
    totals = torch.zeros(len(patches), dtype=torch.float64)
    base_total = 0.0
    n_forward = 0
    hook_names = sorted({h for node in nodes for h in hooks_for_node(node)})
    means: dict[str, torch.Tensor] | None = None
    if config.ablation == "mean":
        means, n_forward = mean_activations(model, task, hook_names, config.batch_size)
    batches = task.batches(config.batch_size)
    chunks = [
        patches[i : i + config.sets_per_forward]
        for i in range(0, len(patches), config.sets_per_forward)
    ]
    steps, done = len(batches) * len(chunks), 0
    for batch in batches:
        with torch.no_grad():
            base, sources, clean_logprobs, n_runs = _prepare(
                model, batch, hook_names, config, means
            )
        n_forward += n_runs
        base_total += float(metric.per_example(base, batch, clean_logprobs).sum())
        base_tokens = batch.clean if config.direction == "noising" else batch.corrupted
        spans = labelled is not None and labelled.mode == "spans"
        labels = labelled.assign(batch) if spans and labelled is not None else None
        for c, chunk in enumerate(chunks):
            with torch.no_grad():
                logits = run_node_patches(
                    model, base_tokens, batch.positions, sources, chunk, labels
                )
            n_forward += 1
            values = metric.per_example(logits, batch, clean_logprobs)  # [K, n]
            offset = c * config.sets_per_forward
            totals[offset : offset + len(chunk)] += values.sum(-1).double().cpu()
            done += 1
            if progress is not None:
                progress(done / steps, f"activation patching: {done}/{steps} stacked forwards")
    return totals, base_total, n_forward


def _prepare(
    model: TransformerBridge,
    batch: TaskData,
    hook_names: list[str],
    config: ActivationPatchingConfig,
    means: dict[str, torch.Tensor] | None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, int]:
    """Unpatched logits at the read positions, the patch sources, the clean log-probs, and
    the number of forwards this took."""
    clean_logits, clean_cache = model.run_with_cache(
        batch.clean, names_filter=lambda name: name in hook_names
    )
    clean_read = read_positions(clean_logits, batch.positions)
    clean_logprobs = torch.log_softmax(clean_read.float(), dim=-1)
    if config.direction == "denoising":
        corrupted_logits = model(batch.corrupted)
        sources = {name: clean_cache[name] for name in hook_names}
        return read_positions(corrupted_logits, batch.positions), sources, clean_logprobs, 2
    clean_values = {name: clean_cache[name] for name in hook_names}
    sources, n_runs = ablation_sources(
        model, batch, hook_names, config.ablation, clean_values, means
    )
    return clean_read, sources, clean_logprobs, 1 + n_runs


def _node_score_table(
    graph: ComputationalGraph,
    patches: Sequence[NodePatch],
    effects: torch.Tensor,
    seq_len: int | None,
) -> torch.Tensor:
    shape: tuple[int, ...] = (graph.n_nodes,) if seq_len is None else (seq_len, graph.n_nodes)
    table = torch.zeros(shape, dtype=torch.float64)
    for patch, effect in zip(patches, effects.tolist(), strict=True):
        index = graph.node_index(patch.node)
        if seq_len is None:
            table[index] = effect
        else:
            assert patch.position is not None
            table[patch.position, index] = effect
    return table
