"""Task metrics read from the logits at a task's read positions.

Every metric takes the logits at the read positions, ``[..., N, P, vocab]`` (leading
dimensions are the stacked intervention sets of the engine), the task, and the clean run's
log-probabilities at the same positions ``[N, P, vocab]`` (KL and cosine need them), and
returns one value per example, ``[..., N]``, averaged over the read positions. Methods average
over examples. Any callable with that signature is a metric too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from circuitreg.workers.tasks.base import TaskData

MetricFn = Callable[[torch.Tensor, TaskData, torch.Tensor], torch.Tensor]

# Metrics are computed in float32 from runs whose products the BLAS may sum in different
# orders (an expanded input and a contiguous one take different kernels): two runs that
# should agree exactly differ by rounding. Measured: KL 1.9e-8 between a run and the same
# run with every edge patched from identical prompts, on an AVX-512 Xeon (at most 1e-9 on the
# CPU of earlier sessions, where a test needing that passed). A metric gap within this
# fraction of the values' scale (and of 1) is taken as no gap.
ROUNDING = 1e-6


def within_rounding(a: float, b: float) -> bool:
    """Whether two metric values differ by no more than float32 rounding (``ROUNDING``)."""
    return math.isclose(a, b, rel_tol=ROUNDING, abs_tol=ROUNDING)


class MetricError(ValueError):
    """A metric that does not exist or cannot be used on a task."""


def logit_diff(logits: torch.Tensor, task: TaskData, clean_logprobs: torch.Tensor) -> torch.Tensor:
    """Answer logit minus distractor logit, averaged over read positions."""
    if task.distractors is None:
        raise MetricError(
            f"task {task.name!r} has no distractor tokens, so logit_diff is undefined; "
            "use prob, kl or cosine"
        )
    answers = task.answers.expand(*logits.shape[:-3], *task.answers.shape)
    distract = task.distractors.expand(*logits.shape[:-3], *task.distractors.shape)
    right = logits.gather(-1, answers.unsqueeze(-1)).squeeze(-1)
    wrong = logits.gather(-1, distract.unsqueeze(-1)).squeeze(-1)
    return (right - wrong).mean(-1)


def answer_prob(logits: torch.Tensor, task: TaskData, clean_logprobs: torch.Tensor) -> torch.Tensor:
    """Probability of the answer token, averaged over read positions."""
    probs = torch.softmax(logits.float(), dim=-1)
    answers = task.answers.expand(*logits.shape[:-3], *task.answers.shape)
    return probs.gather(-1, answers.unsqueeze(-1)).squeeze(-1).mean(-1)


def kl_divergence(
    logits: torch.Tensor, task: TaskData, clean_logprobs: torch.Tensor
) -> torch.Tensor:
    """KL(clean || intervened) of the next-token distributions, averaged over read positions.

    Zero for the clean run; larger means the intervention changed the output more.
    """
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    clean = clean_logprobs.float()
    return (clean.exp() * (clean - logprobs)).sum(-1).mean(-1)


def cosine_similarity(
    logits: torch.Tensor, task: TaskData, clean_logprobs: torch.Tensor
) -> torch.Tensor:
    """Cosine similarity of the intervened and the clean logit vectors, averaged over read
    positions.

    Both vectors are centred over the vocabulary first (their mean logit subtracted): adding
    one constant to every logit leaves the next-token distribution unchanged, and the centred
    clean logits are exactly the centred clean log-probabilities that every metric is given.
    In [-1, 1]: 1 for the clean run (and any run that only shifts or scales its logits),
    higher is closer to clean, so it is a higher-is-better metric like ``logit_diff``. A zero
    centred vector (all logits equal) has similarity 0 with anything.
    """
    patched = logits.float()
    patched = patched - patched.mean(-1, keepdim=True)
    clean = clean_logprobs.float()
    clean = (clean - clean.mean(-1, keepdim=True)).expand_as(patched)
    return torch.nn.functional.cosine_similarity(patched, clean, dim=-1, eps=1e-12).mean(-1)


@dataclass(frozen=True)
class Metric:
    """A named metric; ``higher_is_better`` is False for divergences."""

    name: str
    fn: MetricFn
    higher_is_better: bool = True

    def per_example(
        self, logits: torch.Tensor, task: TaskData, clean_logprobs: torch.Tensor
    ) -> torch.Tensor:
        """``[..., N]`` values."""
        return self.fn(logits, task, clean_logprobs)

    def __call__(
        self, logits: torch.Tensor, task: TaskData, clean_logprobs: torch.Tensor
    ) -> torch.Tensor:
        """``[...]`` values: the mean over examples."""
        return self.fn(logits, task, clean_logprobs).mean(-1)


METRICS: dict[str, Metric] = {
    "logit_diff": Metric("logit_diff", logit_diff),
    "prob": Metric("prob", answer_prob),
    "kl": Metric("kl", kl_divergence, higher_is_better=False),
    "cosine": Metric("cosine", cosine_similarity),
}


def resolve_metric(metric: str | MetricFn | Metric) -> Metric:
    """A ``Metric`` from a name (logit_diff, prob, kl, cosine), a callable or a ``Metric``."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        try:
            return METRICS[metric]
        except KeyError:
            raise MetricError(
                f"unknown metric {metric!r}; choose one of {', '.join(METRICS)} or pass a callable"
            ) from None
    if callable(metric):
        return Metric(getattr(metric, "__name__", "callable"), metric)
    raise MetricError(f"a metric must be a name or a callable, got {type(metric).__name__}")


def metric_name(metric: str | MetricFn | Metric) -> str:
    """The name recorded for a metric (``callable:<name>`` for a function)."""
    if isinstance(metric, str):
        return metric
    if isinstance(metric, Metric):
        return metric.name if metric.name in METRICS else f"callable:{metric.name}"
    return f"callable:{getattr(metric, '__name__', 'anonymous')}"
