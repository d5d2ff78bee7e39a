"""Bootstrap sign-consistency: keep only the edges whose sign survives resampling the prompts.

The base method scores every edge once on the whole task (the point estimate ``s``) and once on
each of ``n_bootstrap`` bootstrap resamples: the task's N prompt pairs drawn N times with
replacement (``torch.Generator`` seeded by ``seed``; mean ablation averages over the resample,
resample ablation patches each drawn pair from its own corrupted prompt). An edge's agreement
is the fraction of resamples whose score has the same sign as ``s`` (an edge with ``s = 0``
agrees with none). The result's scores are ``s`` oriented so that positive helps
(``composite.oriented``) where the agreement is at least ``sign_agreement``, and 0 elsewhere,
so no rank-based selection picks an unstable edge (the shared selections never rank an edge
scored 0 above a scored one). The base method's own circuit (ACDC's edges), where it has one,
is kept less its unstable edges, then pruned of dangling edges.

The cost is ``n_bootstrap + 1`` runs of the base method; ``n_forward`` and ``n_backward`` are
their sums. Methods whose scores are never negative (mask pruning's keep probabilities) agree
on every scored edge by construction; when no run scored any edge below 0, ``warnings`` says
that the filter dropped only edges a resample scored 0.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import Field

from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.base import ConfigError, MethodConfig, ProgressFn, ScoreResult
from circuitreg.workers.methods.composite import (
    MemberRun,
    member_config,
    member_overrides,
    oriented,
    scaled,
)
from circuitreg.workers.methods.registry import register_method
from circuitreg.workers.tasks.base import TaskData

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


class BootstrapConfig(MethodConfig):
    """Options of bootstrap sign-consistency around a base method."""

    method_name: ClassVar[str] = "bootstrap"

    base_method: str = Field(default="eap", description="the method re-run on each resample")
    base_params: str = Field(
        default="",
        description="base method options as option=value, comma-separated (e.g. steps=10); "
        "it shares ablation, metric and batch_size",
    )
    n_bootstrap: int = Field(default=20, ge=1, description="bootstrap resamples of the prompts")
    sign_agreement: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="keep edges whose sign agrees in at least this fraction of resamples",
    )
    seed: int = Field(default=0, description="seed of the resampling")

    def check(self) -> None:
        super().check()
        self.base()

    def base(self) -> tuple[Any, MethodConfig]:
        """The base method's registry entry and config."""
        name = self.base_method.strip()
        prefixed = ",".join(
            f"{name}.{item.strip()}" for item in self.base_params.split(",") if item.strip()
        )
        overrides = member_overrides(prefixed, [name])[name]
        return member_config(name, self, overrides, refuse=("bootstrap",))


def resample_indices(n: int, n_bootstrap: int, seed: int) -> torch.Tensor:
    """``[n_bootstrap, n]`` indices drawn with replacement, the same for the same seed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (n_bootstrap, n), generator=generator)


def sign_agreement(point: torch.Tensor, resampled: torch.Tensor) -> torch.Tensor:
    """Per edge, the fraction of resampled scores ``[B, E]`` with the sign of ``point`` ``[E]``
    (0 where ``point`` is 0)."""
    sign = torch.sign(point)
    agree = (torch.sign(resampled) == sign).double().mean(0)
    return torch.where(sign == 0, torch.zeros_like(agree), agree)


@register_method(
    BootstrapConfig.method_name,
    config=BootstrapConfig,
    description="Bootstrap sign-consistency: a base method's edges whose sign survives "
    "resampled prompts",
)
def bootstrap(
    model: TransformerBridge,
    task: TaskData,
    graph: ComputationalGraph,
    config: BootstrapConfig,
    progress: ProgressFn | None = None,
) -> ScoreResult:
    """Score on the task and on bootstrap resamples; zero the edges whose sign flips."""
    if not isinstance(config, BootstrapConfig):
        raise ConfigError(f"bootstrap needs a BootstrapConfig, not {config!r}")
    started = time.perf_counter()
    info, base = config.base()
    runs = config.n_bootstrap + 1
    full = info.fn(model, task, graph, base, scaled(progress, 0.0, 1 / runs))
    graph.check_edge_vector(full.edge_scores)
    point, _, orientation = oriented(full, base)
    history = [MemberRun.of(full)]
    resampled = []
    draws = resample_indices(task.n_examples, config.n_bootstrap, config.seed)
    for b in range(config.n_bootstrap):
        part = scaled(progress, (b + 1) / runs, (b + 2) / runs)
        result = info.fn(model, task.subset(draws[b].to(task.device)), graph, base, part)
        resampled.append(oriented(result, base)[0])
        history.append(MemberRun.of(result))
    stacked = torch.stack(resampled)
    agreement = sign_agreement(point, stacked)
    stable = agreement >= config.sign_agreement - 1e-12
    edge_scores = torch.where(stable, point, torch.zeros_like(point)).float()
    circuit = None
    if full.circuit is not None:
        circuit = graph.prune_dangling(full.circuit.bool().cpu() & stable)
    warnings = [f"{info.name}: {w}" for w in full.extra.get("warnings", [])]
    if not bool((point < 0).any() or (stacked < 0).any()):
        warnings.append(
            f"no run of {info.name} scored an edge below 0 (oriented), so the filter dropped "
            "only edges that a resample scored 0"
        )
    scored = point != 0
    return ScoreResult(
        edge_scores=edge_scores,
        method=config.method_name,
        params=config.to_dict(),
        n_forward=sum(r.n_forward for r in history),
        n_backward=sum(r.n_backward for r in history),
        seconds=time.perf_counter() - started,
        circuit=circuit,
        extra={
            "base": history[0].to_dict(),
            "resample_runs": [r.to_dict() for r in history[1:]],
            "orientation": orientation,
            "sign_agreement": agreement.tolist(),
            "stable_edges": int((stable & scored).sum()),
            "dropped_edges": int((~stable & scored).sum()),
            "scored_edges": int(scored.sum()),
            "warnings": warnings,
        },
    )
