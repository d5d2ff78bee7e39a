"""Edge attribution patching (EAP; Syed et al. 2023), batched, on the engine's graph.

The score of edge ``w -> r`` is the first-order estimate of what patching it does to the
metric: ``(ablated_w - clean_w) . d metric / d input_r`` at the clean run, summed over
positions and averaged over examples. On the engine this is exactly the gradient of the
metric with respect to the patch coefficients at zero, so all edges cost one clean forward,
one ablated forward and one backward per batch of examples.

TransformerLens ships ``transformer_lens.tools.analysis.attribution_patching`` with node and
edge granularity; it scores one prompt pair at a time (a forward/backward per example),
in the denoising direction (gradients on the corrupted run), needs per-head result hooks that
natively booted bridges lack, and keys scores by its own ``Node`` objects per position. This
implementation adds: whole batches per pass, the same MIB-named graph and edge order as every
other method here, zero and mean ablations, and ``direction="denoising"`` for parity with
TransformerLens (see ``bench/eap_vs_transformerlens.py``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from pydantic import Field

from circuitreg.workers.engine import InterventionEngine
from circuitreg.workers.engine.forward import embed
from circuitreg.workers.engine.gradients import ReaderGradients, reader_gradients
from circuitreg.workers.engine.relevance import RelevanceRules
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.base import ConfigError, MethodConfig, ProgressFn, ScoreResult
from circuitreg.workers.methods.registry import register_method
from circuitreg.workers.positions import PositionError, PositionMap, PositionMode
from circuitreg.workers.tasks.base import TaskData

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


class EAPConfig(MethodConfig):
    """Options of EAP."""

    method_name: ClassVar[str] = "eap"

    direction: Literal["noising", "denoising"] = Field(
        default="noising",
        description="noising: gradient at the clean run, clean->ablated (default); "
        "denoising: gradient at the corrupted run, corrupted->clean (resample only)",
    )

    positions: PositionMode | None = Field(
        default=None,
        description="also score every edge at every position (ScoreResult.position_scores, "
        "[n_edges, Q]): 'index', each token index (Q = T); 'spans', the task's named spans "
        "plus 'other', aligned across prompts; edge_scores are their sum over positions",
    )

    def check(self) -> None:
        super().check()
        if self.direction == "denoising" and self.ablation != "resample":
            raise ConfigError("denoising EAP needs the resample ablation (a corrupted run)")


def swapped(task: TaskData) -> TaskData:
    """The task with clean and corrupted prompts exchanged (answers unchanged)."""
    return replace(
        task,
        clean=task.corrupted,
        corrupted=task.clean,
        corruption=f"swapped({task.corruption})",
    )


def node_scores_from_edges(scores: torch.Tensor, graph: ComputationalGraph) -> torch.Tensor:
    """Each node's score: the sum of its outgoing edges' scores (linear methods)."""
    out = torch.zeros(graph.n_nodes, dtype=scores.dtype)
    return out.index_add_(0, graph.edge_source, scores)


def attribution_scores(
    engine: InterventionEngine,
    progress: ProgressFn | None = None,
    rules: RelevanceRules | None = None,
    positions: PositionMap | None = None,
) -> torch.Tensor:
    """Gradient of the metric w.r.t. the patch coefficients at zero, ``[n_edges]`` (with
    ``rules``, the relevance-propagating one: RelP); with ``positions``, the same per
    position of the map, ``[n_edges, Q]`` (``ReaderGradients.position_scores``), float64.

    Per batch of examples: the ablated writer outputs (a corrupted forward under resample)
    and one unpatched forward and backward that give every reader's gradient and the clean
    writer outputs at once (``engine.gradients``); the clean run's own logits are the
    reference distribution a KL metric compares with. A positional run costs the same
    passes: only the contraction keeps the position axis.
    """
    graph = engine.graph
    shape = (graph.n_edges,) if positions is None else (graph.n_edges, positions.size)
    total = torch.zeros(shape, dtype=torch.float64)
    tasks = list(engine.task.batches(engine.batch_size))
    for i, task in enumerate(tasks):
        weight = task.n_examples / engine.task.n_examples

        def metric(
            logits: torch.Tensor, task: TaskData = task, weight: float = weight
        ) -> torch.Tensor:
            reference = torch.log_softmax(logits[0].detach().float(), dim=-1)
            return engine.metric(logits, task, reference).sum() * weight

        embedded = embed(engine.weights, task.clean)
        grads = reader_gradients(
            engine.weights, engine.graph, embedded, task.positions, metric, rules
        )
        engine.n_forward += 1
        engine.n_backward += 1
        ablated = engine.ablated_outputs(task, _engine_shape(grads.outputs))
        delta = grads.delta_to(ablated)
        total += contract_positions(grads, graph, delta, positions, task)
        if progress is not None:
            name = "EAP" if rules is None else "RelP"
            progress((i + 1) / len(tasks), f"{name} batch {i + 1}/{len(tasks)}")
    return total


def contract_positions(
    grads: ReaderGradients,
    graph: ComputationalGraph,
    delta: torch.Tensor,
    positions: PositionMap | None,
    task: TaskData,
) -> torch.Tensor:
    """``grads`` dotted with ``delta`` on one batch ``task``: ``[n_edges]`` without
    ``positions``; per token index ``[n_edges, T]`` (the plain per-position contraction);
    per span ``[n_edges, Q]`` through the batch's own one-hot map."""
    if positions is None:
        return grads.edge_scores(graph, delta)
    if positions.mode == "index":
        return grads.position_scores(graph, delta)
    return grads.position_scores(graph, delta, positions.one_hot(task, delta.dtype))


def position_map(
    graph: ComputationalGraph, task: TaskData, mode: PositionMode | None
) -> PositionMap | None:
    """The positions a run scores at (None: unpositioned), checked against the graph: a
    graph that names its positions must have exactly the map's ``Q`` (position ``q`` of
    the scores is label ``q`` of the map: token ``q`` of every prompt, or span ``q``)."""
    if mode is None:
        return None
    try:
        positions = PositionMap.for_task(task, mode)
    except PositionError as exc:
        raise ConfigError(str(exc)) from exc
    if graph.positions is not None and graph.positions != positions.size:
        raise ConfigError(
            f"the graph has {graph.positions} positions but {mode} positions of task "
            f"{task.name!r} are {positions.size} ({', '.join(positions.labels[:8])}"
            f"{', ...' if positions.size > 8 else ''})"
        )
    return positions


def _engine_shape(writer_major: torch.Tensor) -> torch.Size:
    """``[N, T, W, d]``, the engine's layout, of writer outputs kept ``[W, N, T, d]``."""
    w, n, t, d = writer_major.shape
    return torch.Size((n, t, w, d))


@register_method(
    "eap",
    config=EAPConfig,
    description="Edge attribution patching: one backward pass scores all edges",
)
def eap(
    model: TransformerBridge,
    task: TaskData,
    graph: ComputationalGraph,
    config: EAPConfig,
    progress: ProgressFn | None = None,
) -> ScoreResult:
    """Score every edge with EAP."""
    return attribution_patching(model, task, graph, config, progress)


def attribution_patching(
    model: TransformerBridge,
    task: TaskData,
    graph: ComputationalGraph,
    config: EAPConfig,
    progress: ProgressFn | None = None,
    rules: RelevanceRules | None = None,
) -> ScoreResult:
    """EAP's two forwards and one backward; ``rules`` swaps the gradient for LRP's (RelP).
    With ``config.positions`` the result also carries ``position_scores`` ``[n_edges, Q]``
    and its edge scores are their sum, so the summed circuit is the unpositioned one."""
    start = time.perf_counter()
    positions = position_map(graph, task, config.positions)
    run_task = swapped(task) if config.direction == "denoising" else task
    engine = InterventionEngine(
        model,
        graph,
        run_task,
        config.ablation,
        config.metric,
        config.batch_size,
        workload="attribution",
    )
    totals = attribution_scores(engine, progress, rules=rules, positions=positions)
    scores = (totals if positions is None else totals.sum(-1)).float()
    return ScoreResult(
        edge_scores=scores,
        position_scores=None if positions is None else totals.float(),
        positions=positions,
        node_scores=node_scores_from_edges(scores, graph),
        method=config.method_name,
        params=config.to_dict(),
        n_forward=engine.n_forward,
        n_backward=engine.n_backward,
        seconds=time.perf_counter() - start,
    )
