"""EAP with integrated gradients (EAP-IG; Hanna et al. 2024), in two variants.

EAP's gradient is taken at one point (the clean run), where it may be saturated; EAP-IG
averages it along a path from the ablated to the clean run, and multiplies the average by
the same activation difference ``ablated_w - clean_w``:

- ``inputs``: only the input embedding is interpolated,
  ``emb = ablated + (k / steps) (clean - ablated)`` for ``k = 0 .. steps - 1``; everything
  downstream runs normally (the EAP-IG paper's method).
- ``activations``: one writer group at a time (the input, a layer's heads, a layer's MLP) is
  fixed to ``(k / steps) clean + (1 - k / steps) ablated`` while the rest runs normally, for
  ``k = 1 .. steps`` (Marks et al.'s IG on activations, as EAP-IG's
  ``EAP-IG-activations``); gradients are averaged over every group and step. A fixed group
  passes no gradient to its own inputs during its placement, exactly as there.

With zero ablation on a model with normalisation the integral diverges at the zero input,
and both variants refuse it (``_refuse_a_normalised_zero_input``).

With one step, ``activations`` is EAP (gradient at the clean run) and ``inputs`` takes the
gradient at the ablated input, as EAP-IG's left Riemann sum does.

Like EAP, an edge's score is one dot product over the receiver's input dimensions, so parts of
an edge that push in opposite directions cancel even when removing the whole edge matters. On
tracr programs with zero ablation, ``input->m0`` carries the tokens and tracr's constant
``one`` direction (its MLPs' bias); on ``same_as_previous`` (``bench/unseen_programs.py``)
they contribute -0.656 and +0.656 and the edge scores exactly 0 though it is needed. Exact
patching (ACDC, path patching, mask pruning) sees such edges.

Every point of either variant is an unpatched run (the activations variant's with one writer
group fixed), so each is one forward and backward of the probed model
(``engine.gradients``: every reader's gradient at once, ``d metric / d patch_e = delta_w .
grad_r`` at ``patch = 0``); the gradients are summed over the points and contracted once
with the clean run's deltas. That contraction is what ``positions`` changes: per token
index or per span (``ReaderGradients.position_scores``), ``[n_edges, Q]`` summing over
``Q`` to the edge scores, as in EAP. (The activations variant first ran on the engine's
patched forward with fixed deltas; ``tests/workers/test_methods_eap_ig_positions.py`` holds
this path to it.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from pydantic import Field

from circuitreg.workers.engine import InterventionEngine, Override, PreparedBatch
from circuitreg.workers.engine.gradients import ReaderGradients, reader_gradients
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.base import ConfigError, MethodConfig, ProgressFn, ScoreResult
from circuitreg.workers.methods.eap import (
    contract_positions,
    node_scores_from_edges,
    position_map,
)
from circuitreg.workers.methods.registry import register_method
from circuitreg.workers.positions import PositionMap, PositionMode
from circuitreg.workers.tasks.base import TaskData

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


class EAPIGConfig(MethodConfig):
    """Options of EAP-IG."""

    method_name: ClassVar[str] = "eap_ig"

    steps: int = Field(default=5, ge=1, description="integration steps (EAP-IG uses 5 to 30)")
    variant: Literal["inputs", "activations"] = Field(
        default="inputs", description="interpolate the inputs or each layer's activations"
    )
    positions: PositionMode | None = Field(
        default=None,
        description="also score every edge at every position (ScoreResult.position_scores, "
        "[n_edges, Q]): 'index', each token index; 'spans', the task's named spans plus "
        "'other'; edge_scores are their sum over positions",
    )


def _writer_groups(graph: ComputationalGraph) -> list[tuple[int, int]]:
    """Writer index ranges interpolated together: input, each layer's heads, each MLP."""
    groups = [(0, 1)]
    for layer in range(graph.n_layers):
        first = graph.writer_index(layer, 0)
        groups.append((first, first + graph.n_heads))
        if not graph.attn_only:
            mlp = graph.writer_index(layer)
            groups.append((mlp, mlp + 1))
    return groups


def _refuse_a_normalised_zero_input(model: TransformerBridge, ablation: str) -> None:
    """Refuse to integrate from an all-zero input into a model that normalises it.

    With zero ablation both variants integrate the input's contribution from an all-zero
    embedding. A norm makes the first layers (nearly) blind to the input's scale, so along
    that path their gradients grow like ``1 / alpha`` and the integral diverges at its start.
    On a random 2-layer LN model: the inputs variant's left Riemann sum, whose first point is
    the zero input itself (the norm divides by ``sqrt(eps)``), gave edge scores up to 4.7e7
    (EAP there: 0.089); a midpoint rule that skips that point gave scores that kept growing
    with the steps (largest 0.11 at 5 steps, 0.33 at 64); the activations variant's edges out
    of the input grew too (0.0001, 0.0017, 0.0061 at 5, 20, 64 steps). The scores would
    depend on the step count, not the model, so the run is refused.
    """
    if ablation == "zero" and getattr(model.cfg, "normalization_type", None) is not None:
        raise ConfigError(
            "EAP-IG integrates the input from its ablated value, which is all zeros here (zero "
            f"ablation), into a model that normalises it ({model.cfg.normalization_type}): near "
            "zero the norm's gradient grows without bound and the integral diverges, so the "
            "scores would depend on the number of steps. Use resample or mean ablation, or EAP "
            "(one gradient at the clean run)"
        )


def _path_points(
    batch: PreparedBatch, config: EAPIGConfig, groups: list[tuple[int, int]]
) -> Iterator[tuple[torch.Tensor, Override | None]]:
    """The points the gradient is averaged over: (embedding, writer group fixed or None).

    ``inputs``: the embedding ``ablated + (k / steps) (clean - ablated)``, ``k = 0 ..
    steps - 1``; ``activations``: the clean embedding with one group at a time fixed to
    ``alpha clean + (1 - alpha) ablated``, ``alpha = k / steps``, ``k = 1 .. steps``.
    """
    steps = config.steps
    ablated = batch.ablated.expand_as(batch.clean_outputs)
    if config.variant == "inputs":
        ablated_input = ablated[:, :, 0]
        for k in range(steps):
            yield ablated_input + (k / steps) * (batch.embedded - ablated_input), None
        return
    for lo, hi in groups:
        for k in range(1, steps + 1):
            alpha = k / steps
            values = alpha * batch.clean_outputs[:, :, lo:hi] + (1 - alpha) * ablated[:, :, lo:hi]
            yield batch.embedded, Override(lo, hi, values)


def _integrated(
    engine: InterventionEngine,
    batch: PreparedBatch,
    points: Iterator[tuple[torch.Tensor, Override | None]],
    positions: PositionMap | None,
    tick: Callable[[], None],
) -> torch.Tensor:
    """One batch's summed scores: the reader gradients at every point (one probed forward
    and backward each), summed, then contracted once with the clean run's writer deltas,
    ``[n_edges]`` or, with ``positions``, ``[n_edges, Q]``."""

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return engine.metric_of(batch, logits).sum()

    total: ReaderGradients | None = None
    for embedded, override in points:
        grads = reader_gradients(
            engine.weights, engine.graph, embedded, batch.task.positions, metric,
            override=override,
        )  # fmt: skip
        engine.n_forward += 1
        engine.n_backward += 1
        if total is None:
            total = grads
        else:
            total.add_(grads)
        tick()
    assert total is not None  # steps >= 1
    delta = (batch.ablated - batch.clean_outputs).permute(2, 0, 1, 3)
    return contract_positions(total, engine.graph, delta, positions, batch.task)


@register_method(
    "eap_ig",
    config=EAPIGConfig,
    description="EAP with integrated gradients (inputs or activations)",
)
def eap_ig(
    model: TransformerBridge,
    task: TaskData,
    graph: ComputationalGraph,
    config: EAPIGConfig,
    progress: ProgressFn | None = None,
) -> ScoreResult:
    """Score every edge with EAP-IG (with ``config.positions``, at every position too)."""
    start = time.perf_counter()
    _refuse_a_normalised_zero_input(model, config.ablation)  # before any forward pass
    positions = position_map(graph, task, config.positions)
    engine = InterventionEngine(
        model, graph, task, config.ablation, config.metric, config.batch_size,
        workload="attribution",
    )  # fmt: skip
    batches = list(engine.batches())
    groups = _writer_groups(graph) if config.variant == "activations" else [(0, 1)]
    total_work = len(batches) * len(groups) * config.steps
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0] / total_work, f"EAP-IG step {done[0]}/{total_work}")

    shape = (graph.n_edges,) if positions is None else (graph.n_edges, positions.size)
    totals = torch.zeros(shape, dtype=torch.float64)
    for batch in batches:
        points = _path_points(batch, config, groups)
        totals += _integrated(engine, batch, points, positions, tick)
    totals /= len(groups) * config.steps
    edge_scores = (totals if positions is None else totals.sum(-1)).float()
    return ScoreResult(
        edge_scores=edge_scores,
        position_scores=None if positions is None else totals.float(),
        positions=positions,
        node_scores=node_scores_from_edges(edge_scores, graph),
        method=config.method_name,
        params=config.to_dict(),
        n_forward=engine.n_forward,
        n_backward=engine.n_backward,
        seconds=time.perf_counter() - start,
    )
