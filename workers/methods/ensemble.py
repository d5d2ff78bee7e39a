"""An ensemble of discovery methods: several methods' scores, normalised and combined.

Each member ``m`` runs on the same model, task and graph, with the ensemble's ablation, metric
and batch size (``member_params`` may override any member option). Its scores are first
oriented so that positive helps (``composite.oriented``), then normalised:

    a_m(e) = |s_m(e)| / max_e' |s_m(e')|        (all zeros when the member scored nothing)

so every member's strongest edge is 1 and members on different scales (EAP's logit
differences, ACDC's KL costs, mask pruning's keep probabilities) weigh alike. The magnitudes
are combined per edge by ``combine``: ``mean`` (the average), ``min`` (an edge is as strong as
its weakest member: only edges every member finds score high) or ``max`` (the strongest
member's). The ensemble's score is that magnitude with the sign of the members' mean oriented,
normalised score (+ when it is 0), so positive helps as for any method validation does not
know. ``n_forward`` and ``n_backward`` are the members' sums; ``extra["members"]`` holds each
member's params and cost, in the order given.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import Field

from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.base import ConfigError, MethodConfig, ProgressFn, ScoreResult
from circuitreg.workers.methods.composite import (
    MemberRun,
    member_config,
    member_overrides,
    method_names,
    oriented,
    scaled,
)
from circuitreg.workers.methods.registry import register_method
from circuitreg.workers.tasks.base import TaskData

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

Combine = Literal["mean", "min", "max"]


class EnsembleConfig(MethodConfig):
    """Options of an ensemble: its members, how their scores combine, and member options."""

    method_name: ClassVar[str] = "ensemble"

    methods: str = Field(
        default="eap,eap_ig", description="member methods, comma-separated (two or more)"
    )
    combine: Combine = Field(
        default="mean",
        description="mean, min or max of the members' |score| / max |score| per edge",
    )
    member_params: str = Field(
        default="",
        description="member options as method.option=value, comma-separated "
        "(e.g. eap_ig.steps=10); members share ablation, metric and batch_size",
    )

    def check(self) -> None:
        super().check()
        self.members()  # every member's name and options, checked before any pass

    def members(self) -> list[tuple[Any, MethodConfig]]:
        """Each member's registry entry and config, in the order given."""
        names = method_names(self.methods, option="methods")
        if len(names) < 2:
            raise ConfigError(f"an ensemble needs two or more methods, got {self.methods!r}")
        if len(set(names)) != len(names):
            raise ConfigError(f"methods names a method twice: {self.methods!r}")
        overrides = member_overrides(self.member_params, names)
        return [member_config(n, self, overrides[n], refuse=("ensemble",)) for n in names]


def combine_scores(oriented_scores: list[torch.Tensor], combine: str) -> torch.Tensor:
    """Normalise each member's oriented scores by its largest |score| and combine (module)."""
    normalised = []
    for scores in oriented_scores:
        peak = float(scores.abs().max()) if scores.numel() else 0.0
        normalised.append(scores / peak if peak > 0 else torch.zeros_like(scores))
    stacked = torch.stack(normalised)  # [members, edges], each in [-1, 1]
    magnitude = stacked.abs()
    if combine == "mean":
        combined = magnitude.mean(0)
    elif combine == "min":
        combined = magnitude.min(0).values
    elif combine == "max":
        combined = magnitude.max(0).values
    else:
        raise ConfigError(f"combine {combine!r} is not mean, min or max")
    sign = torch.where(stacked.mean(0) < 0, -1.0, 1.0).to(combined.dtype)
    return sign * combined


@register_method(
    EnsembleConfig.method_name,
    config=EnsembleConfig,
    description="Ensemble: members' |score| / max |score| combined by mean, min or max",
)
def ensemble(
    model: TransformerBridge,
    task: TaskData,
    graph: ComputationalGraph,
    config: EnsembleConfig,
    progress: ProgressFn | None = None,
) -> ScoreResult:
    """Run every member and combine their normalised scores (see the module)."""
    if not isinstance(config, EnsembleConfig):
        raise ConfigError(f"ensemble needs an EnsembleConfig, not {config!r}")
    started = time.perf_counter()
    members = config.members()
    scores, runs, orientation, warnings = [], [], {}, []
    for i, (info, member) in enumerate(members):
        part = scaled(progress, i / len(members), (i + 1) / len(members))
        result = info.fn(model, task, graph, member, part)
        graph.check_edge_vector(result.edge_scores)
        signed, _, why = oriented(result, member)
        scores.append(signed)
        runs.append(MemberRun.of(result))
        orientation[info.name] = why
        warnings += [f"{info.name}: {w}" for w in result.extra.get("warnings", [])]
        if not bool(signed.abs().max() > 0):
            warnings.append(f"{info.name} scored every edge 0; it adds 0 to every edge")
    edge_scores = combine_scores(scores, config.combine).float()
    return ScoreResult(
        edge_scores=edge_scores,
        method=config.method_name,
        params=config.to_dict(),
        n_forward=sum(r.n_forward for r in runs),
        n_backward=sum(r.n_backward for r in runs),
        seconds=time.perf_counter() - started,
        extra={
            "members": [r.to_dict() for r in runs],
            "combine": config.combine,
            "normalisation": "|score| / max |score| per member, after orienting positive = helps",
            "orientation": orientation,
            "warnings": warnings,
        },
    )
