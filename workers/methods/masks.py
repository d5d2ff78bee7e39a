"""Differentiable mask pruning: learn which edges to keep with an L0 penalty.

Every edge gets a learnable logit. Each step samples masks (see ``masks_param``), runs the
intervention engine with each edge interpolated between its clean value (mask 1) and its
ablated value (mask 0), and takes an Adam step on

    faithfulness loss + sparsity term

The masks come from a stochastic relaxation of Bernoulli gates, differentiated through the
model (hard-concrete as in Edge Pruning, Bhaskar et al. 2024, or Gumbel-sigmoid with a
straight-through estimator as in DiscoGP, Yu et al. 2024), or are exact Bernoulli gates whose
gradient is the score-function estimate (``bernoulli_score``), which needs no derivative of
the model: where the model's output is a step function of a mask, as in tracr's
discretising MLPs, a relaxation gets no gradient and loses the edge. ``auto`` (the default)
takes the score function on small graphs, where its noise is low, and hard-concrete on large
ones (``masks_config.AUTO_SCORE_FUNCTION_MAX_EDGES``).

* faithfulness: ``objective="metric"`` keeps the task metric of the masked model at the clean
  model's value, per example (squared error, divided by the squared clean-vs-ablated gap so
  the loss is scale free); ``objective="kl"`` keeps the output distribution at the read
  positions (KL from the clean model's, as Edge Pruning does).
* sparsity: with ``sparsity_control="target"`` the expected density ``d`` is driven down to
  ``d* = 1 - target_sparsity`` by Edge Pruning's Lagrangian ``l1 * e + l2 * e^2``, whose
  multipliers rise by gradient ascent while the constraint is violated, and ``d*`` ramps down
  linearly over the first ``warmup`` fraction of the steps. Edge Pruning uses the two-sided
  gap ``e = d - d*``; here ``e = relu(d - d*)`` (density *at most* the target), because with
  the two-sided gap the multiplier built up during the ramp kept pushing after the target was
  met, and with straight-through masks the overshoot switched whole paths off for good (a
  path whose other edges are off gives its edges no gradient). With ``"lambda"``, a fixed
  ``sparsity_lambda`` multiplies the expected density instead (DiscoGP's penalty).

Scores. The learned logits are monotone in the keep probability; the shared selection ranks
by ``|score|``, so the scores reported are ``sigmoid(logit)`` (ranking and top-k identical to
the logits', never negative) and the raw logits are in ``extra["mask_logits"]``. An edge is
in the learned circuit when its logit is positive, i.e. its score exceeds 0.5: the selection
``threshold 0.5`` returns it, ``ScoreResult.circuit`` holds it (the selection a run uses when
none is named), and ``extra`` its size, sparsity and metric, and a warning when it keeps less
than half of the clean-vs-ablated metric gap (see ``_unfaithful_warning``).

Warm start. With ``warm_start="eap_ig"`` EAP-IG (inputs variant, ``warm_start_steps`` steps,
the same ablation, metric and batch size) scores the edges first and the logits start at

    logit_e = init_logit * (2 r_e - 1),   r_e = (rank of |score_e| - 1) / (n_edges - 1)

(ranks from 1 for the smallest |score|, ties sharing their average rank), so EAP-IG's best
edge starts at ``+init_logit``, its worst at ``-init_logit`` and the median at 0 (keep
probability 1/2). Ranks, not the normalised scores themselves, because attribution scores
are heavy-tailed: ``|s| / max |s|`` would start nearly every edge near ``-init_logit``,
including the edges EAP-IG cannot see (scored 0 though needed, see ``eap_ig``). Its passes
are added to ``n_forward`` and ``n_backward``, and ``extra["warm_start"]`` records its params
and cost.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from circuitreg.workers.engine import InterventionEngine, PreparedBatch
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.base import ConfigError, ProgressFn, ScoreResult
from circuitreg.workers.methods.masks_config import MaskPruningConfig
from circuitreg.workers.methods.masks_param import (
    MaskDistribution,
    deterministic_mask,
    make_distribution,
)
from circuitreg.workers.methods.registry import register_method
from circuitreg.workers.metrics import within_rounding
from circuitreg.workers.tasks.base import TaskData

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


@register_method(
    MaskPruningConfig.method_name,
    config=MaskPruningConfig,
    description=(
        "Differentiable mask pruning with an L0 penalty (hard-concrete or Gumbel-sigmoid STE)"
    ),
)
def mask_pruning(
    model: TransformerBridge,
    task: TaskData,
    graph: ComputationalGraph,
    config: MaskPruningConfig,
    progress: ProgressFn | None = None,
) -> ScoreResult:
    """Learn edge masks; scores are the keep probabilities ``sigmoid(logit)`` (see module)."""
    if not isinstance(config, MaskPruningConfig):
        raise ConfigError(f"mask_pruning needs a MaskPruningConfig, not {config!r}")
    started = time.perf_counter()
    given, config = config, config.resolve(graph.n_edges)
    assert config.lr is not None and config.mask_samples is not None  # resolve fills them
    engine = InterventionEngine(
        model, graph, task, config.ablation, config.metric, config.batch_size,
        set_batch=config.mask_samples, workload="patching_grad",
    )  # fmt: skip
    distribution = make_distribution(config.parameterisation, config.temperature)
    warm = _warm_start(model, task, graph, config, progress)
    with _frozen(model), _seeded(config.seed, engine.device):
        trained = _train(engine, distribution, config, progress, warm)
    learned = trained.logits
    circuit = deterministic_mask(learned)
    circuit_metric, clean_metric, ablated_metric = (float(v) for v in engine.evaluate_circuits(
        torch.stack([circuit, torch.ones_like(circuit), torch.zeros_like(circuit)])
    ))  # fmt: skip
    recovered = _recovered_fraction(circuit_metric, clean_metric, ablated_metric)
    return ScoreResult(
        edge_scores=torch.sigmoid(learned),
        method=MaskPruningConfig.method_name,
        params=config.to_dict(),  # what ran: rerunning with these reproduces it
        n_forward=engine.n_forward + (warm.n_forward if warm is not None else 0),
        n_backward=trained.n_backward + (warm.n_backward if warm is not None else 0),
        seconds=time.perf_counter() - started,
        circuit=circuit.bool(),
        extra={
            "mask_logits": learned.tolist(),
            "circuit_edges": int(circuit.sum()),
            "achieved_sparsity": 1.0 - float(circuit.float().mean()),
            "target_sparsity": (
                config.target_sparsity if config.sparsity_control == "target" else None
            ),
            "circuit_metric": circuit_metric,
            "clean_metric": clean_metric,
            "ablated_metric": ablated_metric,
            "recovered_fraction": recovered,
            "warnings": _unfaithful_warning(
                recovered, circuit_metric, clean_metric, distribution.through_model
            ),
            "requested": given.to_dict(),
            "warm_start": _warm_record(warm),
            "history": trained.history,
            "corruption": task.corruption,
        },
    )


@dataclass(frozen=True)
class _Trained:
    """The learned mask logits (CPU), the loss history and the backward passes spent."""

    logits: torch.Tensor
    history: list[dict[str, float]]
    n_backward: int


def _train(
    engine: InterventionEngine,
    distribution: MaskDistribution,
    config: MaskPruningConfig,
    progress: ProgressFn | None,
    warm: ScoreResult | None = None,
) -> _Trained:
    """Adam on the mask logits against faithfulness plus the sparsity term, one batch a step.

    With a target sparsity, the multipliers of a Lagrangian ascend while the expected
    density exceeds the (warming-up) target; with a fixed lambda the density is weighted.
    """
    assert config.mask_samples is not None and config.lr is not None  # resolve fills them
    batches = list(engine.batches())
    references = [_reference(engine, batch) for batch in batches]
    graph, device = engine.graph, engine.device
    if warm is None:
        logits = torch.full((graph.n_edges,), config.init_logit, device=device, requires_grad=True)
    else:
        start = warm_logits(warm.edge_scores, config.init_logit)
        logits = start.to(device, torch.get_default_dtype()).requires_grad_(True)
    multipliers = torch.zeros(2, device=device, requires_grad=True)
    optimiser = torch.optim.Adam([logits], lr=config.lr)
    ascent = torch.optim.SGD([multipliers], lr=config.lagrangian_lr, maximize=True)
    history: list[dict[str, float]] = []
    n_backward = 0
    for step in range(config.steps):
        index = step % len(batches)
        keep = distribution.sample(logits, config.mask_samples)
        # The score function needs each mask's loss, not its derivative: no graph.
        with torch.set_grad_enabled(distribution.through_model):
            out = engine.run(batches[index], 1.0 - keep)
            losses = _faithfulness(engine, batches[index], out, references[index], config)
        density = distribution.expected_density(logits).mean()
        target = _target_density(config, step)
        if target is None:
            sparsity = config.sparsity_lambda * density
        else:
            excess = torch.relu(density - target)
            sparsity = multipliers[0] * excess + multipliers[1] * excess**2
        optimiser.zero_grad()
        ascent.zero_grad()
        (distribution.objective(logits, keep, losses) + sparsity).backward()
        n_backward += distribution.through_model  # the score function's stops at the logits
        optimiser.step()
        if target is not None:
            ascent.step()
        if step % max(1, config.steps // 20) == 0 or step == config.steps - 1:
            history.append(
                {
                    "step": step,
                    "faithfulness_loss": float(losses.mean().detach()),
                    "density": float(density.detach()),
                }
            )
        if progress is not None:
            progress((step + 1) / config.steps, f"mask pruning: step {step + 1}/{config.steps}")
    return _Trained(logits.detach().cpu(), history, n_backward)


def rank_fractions(scores: torch.Tensor) -> torch.Tensor:
    """Per edge, ``(average rank of |score| - 1) / (n - 1)``: 0 for the smallest, 1 for the
    largest, ties sharing their average (all 1 for a single edge)."""
    from scipy.stats import rankdata

    magnitude = scores.detach().abs().double().cpu().numpy()
    if magnitude.size < 2:
        return torch.ones(magnitude.size, dtype=torch.float64)
    ranks = torch.from_numpy(rankdata(magnitude, method="average"))
    return (ranks - 1) / (magnitude.size - 1)


def warm_logits(scores: torch.Tensor, init_logit: float) -> torch.Tensor:
    """The warm start's logits: ``init_logit * (2 r - 1)`` from the rank fractions ``r``."""
    return init_logit * (2 * rank_fractions(scores) - 1)


def _warm_start(
    model: TransformerBridge,
    task: TaskData,
    graph: ComputationalGraph,
    config: MaskPruningConfig,
    progress: ProgressFn | None,
) -> ScoreResult | None:
    """EAP-IG's scores for the warm start (``None`` without one)."""
    if config.warm_start == "none":
        return None
    from circuitreg.workers.methods.eap_ig import EAPIGConfig, eap_ig

    ig = EAPIGConfig(
        ablation=config.ablation,
        metric=config.metric,
        batch_size=config.batch_size,
        steps=config.warm_start_steps,
    )

    def warm_progress(fraction: float, message: str) -> None:
        if progress is not None:
            progress(0.0, f"warm start: {message}")

    return eap_ig(model, task, graph, ig, warm_progress if progress is not None else None)


def _warm_record(warm: ScoreResult | None) -> dict[str, Any] | None:
    """What ``extra["warm_start"]`` records: the warm start's method, params and cost."""
    if warm is None:
        return None
    return {
        "method": warm.method,
        "params": warm.params,
        "n_forward": warm.n_forward,
        "n_backward": warm.n_backward,
        "seconds": round(warm.seconds, 4),
        "mapping": "logit = init_logit * (2 * rank_fraction(|score|) - 1)",
    }


# Below this share of the clean-vs-ablated gap the learned circuit is reported as unfaithful.
UNFAITHFUL_BELOW = 0.5


def _recovered_fraction(circuit: float, clean: float, ablated: float) -> float | None:
    """How much of the clean-vs-ablated metric gap the circuit keeps (None: no gap)."""
    gap = clean - ablated
    return None if within_rounding(clean, ablated) else (circuit - ablated) / gap


def _unfaithful_warning(
    recovered: float | None, circuit: float, clean: float, relaxed: bool
) -> list[str]:
    """Say so when the masks ended on a circuit that does not do the task.

    A relaxation follows the gradient of the masked model's output; where that output jumps
    with a small change of an edge (tracr's discretising MLPs: on ``count_less_freq``,
    patching 2% of ``input->m0`` moves logit_diff from its clean value 1 to its fully ablated
    value 0) the gradient is zero almost everywhere, the sparsity term wins, and the circuit
    does not do the task (hard-concrete's circuit kept 0% of the gap there at task seeds 0-2).
    The score function can fall short too, from its noise on large graphs.
    """
    if recovered is None or recovered >= UNFAITHFUL_BELOW:
        return []
    why = (
        "A model whose output jumps with small edge changes gives a relaxation no gradient; "
        "parameterisation=bernoulli_score, ACDC or EAP-IG do not need one"
        if relaxed
        else "The score function's noise grows with the graph's edges; more mask_samples or "
        "steps, parameterisation=hard_concrete, or ACDC may find one"
    )
    return [
        f"mask pruning's circuit keeps {recovered:.0%} of the clean-vs-ablated metric gap "
        f"(metric {circuit:.4g} vs clean {clean:.4g}): the masks found no faithful circuit. " + why
    ]


@dataclass(frozen=True)
class _Reference:
    """Per-batch values the faithfulness loss compares against."""

    clean_values: torch.Tensor  # [N] metric of the unmasked model
    scale: torch.Tensor  # mean squared clean-vs-ablated gap, the loss's unit


def _reference(engine: InterventionEngine, batch: PreparedBatch) -> _Reference:
    with torch.no_grad():
        both = engine.run(batch, torch.stack([torch.zeros(engine.graph.n_edges),
                                              torch.ones(engine.graph.n_edges)]))  # fmt: skip
        values = engine.metric.per_example(both, batch.task, batch.clean_logprobs)  # [2, N]
    gap = ((values[0] - values[1]) ** 2).mean()
    return _Reference(clean_values=values[0], scale=gap.clamp_min(1e-8))


def _faithfulness(
    engine: InterventionEngine,
    batch: PreparedBatch,
    logits: torch.Tensor,
    reference: _Reference,
    config: MaskPruningConfig,
) -> torch.Tensor:
    """``[S]`` losses, one per sampled mask: the mean over examples."""
    if config.objective == "kl":
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        clean = batch.clean_logprobs.float()
        return (clean.exp() * (clean - logprobs)).sum(-1).flatten(1).mean(-1)
    values = engine.metric.per_example(logits, batch.task, batch.clean_logprobs)  # [S, N]
    return ((values - reference.clean_values) ** 2).mean(-1) / reference.scale


def _target_density(config: MaskPruningConfig, step: int) -> float | None:
    if config.sparsity_control == "lambda":
        return None
    ramp = config.warmup * config.steps
    progress = 1.0 if ramp <= 0 else min(1.0, (step + 1) / ramp)
    return 1.0 - config.target_sparsity * progress


@contextlib.contextmanager
def _frozen(model: TransformerBridge) -> Iterator[None]:
    """Stop gradients into the model's own parameters (the engine calls its norms and MLPs),
    so training the masks never writes ``.grad`` on the caller's model."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the mask noise without disturbing the caller's random state."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
