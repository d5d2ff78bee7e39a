"""Shared pieces of validation: the mask evaluator contract, thresholds and normalisation.

Every validation measurement is a set of edge masks evaluated together: ``True`` means the
edge carries the clean run's activation, ``False`` means it carries the ablated one (the
corrupted run for resample ablation, zeros or the dataset mean otherwise). One stacked
evaluation answers a whole curve or a whole control table, so validation costs a handful of
batched forwards, not one forward per circuit.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch

from circuitreg.workers.graph import ComputationalGraph


class ValidationError(ValueError):
    """A circuit or setting that cannot be validated; the message says what is wrong."""


class MaskEvaluator(Protocol):
    """Evaluates stacked edge masks on one task under one ablation and metric."""

    graph: ComputationalGraph
    ablation: str
    metric_name: str
    corruption: str | None

    def evaluate(self, masks: torch.Tensor) -> torch.Tensor:
        """Mean metric over the task's examples for each mask: ``[S, n_edges]`` -> ``[S]``."""
        ...


@dataclass(frozen=True)
class ValidationConfig:
    """Thresholds that decide ``passed`` on each result, and sample counts.

    The defaults are deliberately plain round numbers; every result records the thresholds
    it was judged by, so a reader can re-judge a stored measurement.
    """

    faithfulness_min: float = 0.8
    """Faithfulness (and the two 'kept' control rows) must reach this."""
    gone_max: float = 0.2
    """Ablating the circuit must leave at most this much of the behaviour."""
    random_drop_max: float = 0.3
    """Ablating a random same-size edge set may remove at most this much of the behaviour."""
    n_random: int = 8
    """Random same-size edge sets drawn for the control row (averaged)."""
    minimality_tolerance: float = 0.05
    """A component is redundant when removing it changes faithfulness by at most this."""
    completeness_tolerance: float = 0.2
    """Circuit and model must respond to the same knockout within this (in faithfulness)."""
    n_knockouts: int = 16
    """Random knockout sets sampled for completeness."""
    fidelity_min: float = 0.8
    """Ablating the circuit must remove at least this share of the behaviour."""
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_random", "n_knockouts"):
            if getattr(self, name) < 1:
                raise ValidationError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("minimality_tolerance", "completeness_tolerance", "random_drop_max"):
            if getattr(self, name) < 0:
                raise ValidationError(f"{name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form, recorded with results."""
        return asdict(self)


@dataclass(frozen=True)
class Anchors:
    """The metric of the full model and of the empty circuit (everything ablated)."""

    full: float
    empty: float

    def __post_init__(self) -> None:
        # relative: exact patching of identical runs still differs by float rounding
        if not abs(self.full - self.empty) > 1e-6 * max(1.0, abs(self.full), abs(self.empty)):
            raise ValidationError(
                f"the full model and the fully ablated model score the same ({self.full:.6g}): "
                "the ablation removes none of the behaviour, so faithfulness is undefined "
                "(check the task's corruption and the ablation)"
            )

    def normalise(self, value: float) -> float:
        """MIB faithfulness of a metric value: (m - m(empty)) / (m(full) - m(empty))."""
        return (value - self.empty) / (self.full - self.empty)


NOISE_Z = 2.0
"""A clean-ablated gap smaller than this many standard errors (over prompts) is noise."""


@dataclass(frozen=True)
class GapCheck:
    """The clean-ablated gap every faithfulness figure is normalised by, and its noise.

    Faithfulness divides by ``m(full) - m(empty)``. On a model that does not do the task
    (the untrained step-0 toy) that gap is a difference of two noisy means, and the ratio of
    two tiny numbers reads like any other figure (0.977 for the step-0 toy). The gap's
    standard error over prompts says whether it is real: within ``NOISE_Z`` of them, the
    figure is stored as undefined, with the reason.
    """

    gap: float
    standard_error: float | None  # None with one prompt: no spread to measure
    n_examples: int

    @classmethod
    def from_per_example(cls, full: torch.Tensor, empty: torch.Tensor) -> GapCheck:
        """From the metric of the full and the empty circuit on each example ``[N]``."""
        differences = (full - empty).double()
        n = int(differences.numel())
        spread = float(differences.std(unbiased=True)) / n**0.5 if n > 1 else None
        return cls(float(differences.mean()), spread, n)

    @property
    def within_noise(self) -> bool:
        """Whether the gap is indistinguishable from zero over these prompts."""
        if self.standard_error is None:
            return False
        return not abs(self.gap) > NOISE_Z * self.standard_error

    @property
    def reason(self) -> str:
        """Why figures normalised by this gap are undefined."""
        return (
            f"the clean-ablated gap {self.gap:.4g} is within noise (under {NOISE_Z:g} x its "
            f"standard error {self.standard_error or 0.0:.3g} over {self.n_examples} prompts)"
        )

    def to_values(self) -> dict[str, float | None]:
        """The fields every normalised result carries."""
        return {"gap": self.gap, "gap_standard_error": self.standard_error}


def measure_gap(evaluator: MaskEvaluator) -> GapCheck | None:
    """The gap and its noise, for evaluators that can score examples one by one."""
    per_example = getattr(evaluator, "evaluate_per_example", None)
    if per_example is None:
        return None
    graph = evaluator.graph
    values = per_example(torch.stack([full_mask(graph), empty_mask(graph)]))
    return GapCheck.from_per_example(values[0], values[1])


def full_mask(graph: ComputationalGraph) -> torch.Tensor:
    """Every edge clean: the full model."""
    return torch.ones(graph.n_edges, dtype=torch.bool)


def empty_mask(graph: ComputationalGraph) -> torch.Tensor:
    """Every edge ablated: the empty circuit."""
    return torch.zeros(graph.n_edges, dtype=torch.bool)


def evaluate_with_anchors(
    evaluator: MaskEvaluator, masks: list[torch.Tensor]
) -> tuple[Anchors, list[float]]:
    """Evaluate ``masks`` stacked after the full and empty masks, in one evaluation."""
    graph = evaluator.graph
    stacked = torch.stack([full_mask(graph), empty_mask(graph), *[m.bool().cpu() for m in masks]])
    values = [float(v) for v in evaluator.evaluate(stacked).detach().cpu().tolist()]
    if len(values) != stacked.shape[0]:
        raise ValidationError(
            f"the evaluator returned {len(values)} values for {stacked.shape[0]} masks"
        )
    return Anchors(full=values[0], empty=values[1]), values[2:]
