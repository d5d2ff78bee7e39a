"""Stochastic edge-mask parameterisations for differentiable circuit pruning.

Both turn one learned logit per edge into a mask in ``[0, 1]`` that can be sampled with a
gradient, and both draw their relaxed Bernoulli sample from
``torch.distributions.RelaxedBernoulli`` (the binary Concrete / Gumbel-sigmoid distribution,
``sigmoid((logit + Logistic(0, 1)) / temperature)``) rather than from hand-written noise:

* **hard-concrete** (Louizos et al. 2018, as used by Edge Pruning, Bhaskar et al. 2024): the
  relaxed sample is stretched to ``(gamma, zeta) = (-0.1, 1.1)`` and clamped to ``[0, 1]``, so
  exact zeros and ones occur with non-zero probability while the mask stays differentiable.
  Its expected L0 norm has a closed form, ``sigmoid(logit - temperature * log(-gamma/zeta))``.
* **Gumbel-sigmoid with a straight-through estimator** (DiscoGP, Yu et al. 2024): the forward
  pass uses the hard sample ``1[relaxed > 0.5]`` and the backward pass the gradient of the
  relaxed sample. Its expected density is ``P(mask = 1) = sigmoid(logit)``.

For both, the deterministic mask used after training is ``1[logit > 0]``, so the learned
logits are the edge scores and the threshold 0 gives the circuit the optimisation found.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

import torch
from torch.distributions import Bernoulli, RelaxedBernoulli

Parameterisation = Literal["hard_concrete", "gumbel_sigmoid", "bernoulli_score"]
PARAMETERISATIONS: tuple[Parameterisation, ...] = (
    "hard_concrete",
    "gumbel_sigmoid",
    "bernoulli_score",
)

# Stretch interval of the hard-concrete distribution, the values of Louizos et al. and of
# the Edge Pruning code: wide enough that a logit of a few units already clamps to 0 or 1.
HARD_CONCRETE_GAMMA = -0.1
HARD_CONCRETE_ZETA = 1.1


class MaskDistribution(Protocol):
    """A per-edge mask distribution driven by learnable logits.

    ``through_model`` says where the gradient comes from: a relaxation's samples are
    differentiable in the logits and the loss is differentiated through the masked model;
    the score function's samples are not, and the model runs without a graph.
    """

    through_model: bool

    def sample(self, logits: torch.Tensor, n_samples: int) -> torch.Tensor:
        """``[n_samples, *logits.shape]`` masks in ``[0, 1]`` (with a gradient in ``logits``
        when ``through_model``)."""
        ...

    def expected_density(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-edge probability that the mask is non-zero (the expected L0 per edge)."""
        ...

    def objective(
        self, logits: torch.Tensor, masks: torch.Tensor, losses: torch.Tensor
    ) -> torch.Tensor:
        """The scalar to differentiate for the mean of ``losses [S]``, one per mask."""
        ...


class _Relaxation:
    """What the relaxations share: the loss itself carries the gradient."""

    through_model = True

    def objective(
        self, logits: torch.Tensor, masks: torch.Tensor, losses: torch.Tensor
    ) -> torch.Tensor:
        """The mean loss, differentiated through the masked model and the samples."""
        return losses.mean()


class HardConcrete(_Relaxation):
    """The hard-concrete distribution (stretched, clamped binary Concrete)."""

    def __init__(self, temperature: float) -> None:
        _check_temperature(temperature)
        self.temperature = temperature

    def sample(self, logits: torch.Tensor, n_samples: int) -> torch.Tensor:
        """Stretched and clamped relaxed-Bernoulli samples (reparameterised)."""
        relaxed = _relaxed(logits, self.temperature, n_samples)
        stretched = relaxed * (HARD_CONCRETE_ZETA - HARD_CONCRETE_GAMMA) + HARD_CONCRETE_GAMMA
        return stretched.clamp(0.0, 1.0)

    def expected_density(self, logits: torch.Tensor) -> torch.Tensor:
        """``P(mask > 0)``, the closed-form expected L0 norm of Louizos et al. (eq. 12)."""
        shift = self.temperature * math.log(-HARD_CONCRETE_GAMMA / HARD_CONCRETE_ZETA)
        return torch.sigmoid(logits - shift)


class GumbelSigmoidSTE(_Relaxation):
    """Hard Bernoulli masks with the Gumbel-sigmoid straight-through gradient."""

    def __init__(self, temperature: float) -> None:
        _check_temperature(temperature)
        self.temperature = temperature

    def sample(self, logits: torch.Tensor, n_samples: int) -> torch.Tensor:
        """Exact 0/1 values forward; the relaxed sample's gradient backward."""
        relaxed = _relaxed(logits, self.temperature, n_samples)
        hard = (relaxed > 0.5).to(relaxed.dtype)
        # (relaxed - relaxed.detach()) is exactly 0 forward, so the values stay exactly 0/1.
        return hard + (relaxed - relaxed.detach())

    def expected_density(self, logits: torch.Tensor) -> torch.Tensor:
        """``P(mask = 1) = sigmoid(logit)`` (the temperature does not move the 0.5 crossing)."""
        return torch.sigmoid(logits)


class BernoulliScoreFunction:
    """Exact Bernoulli masks whose gradient comes from the score function, not the model.

    The two relaxations above differentiate the masked model's output with respect to the
    mask values. Where that output is a step function of an edge's mask (tracr's
    discretising MLPs: patching 2% of an edge already flips the answer), that derivative is
    zero almost everywhere and the relaxations learn nothing about the edge. The score
    function (REINFORCE, Williams 1992) needs only the loss of each sampled mask:
    ``grad E[L] = E[(L - b) * grad log p(mask)]``, with ``b`` the mean loss of the *other*
    samples of the step (the leave-one-out baseline of Kool et al. 2019, unbiased and
    needing no extra forward). No backward pass runs through the model, so a step is one
    engine forward; its variance grows with the number of edges, so it suits small graphs.
    """

    through_model = False

    def sample(self, logits: torch.Tensor, n_samples: int) -> torch.Tensor:
        """``[n_samples, E]`` exact 0/1 masks, ``P(1) = sigmoid(logit)``, no gradient."""
        if n_samples < 2:
            raise ValueError(f"the leave-one-out baseline needs n_samples >= 2, got {n_samples}")
        probs = torch.sigmoid(logits.detach())
        return torch.bernoulli(probs.expand(n_samples, *probs.shape))

    def expected_density(self, logits: torch.Tensor) -> torch.Tensor:
        """``P(mask = 1) = sigmoid(logit)``."""
        return torch.sigmoid(logits)

    def objective(
        self, logits: torch.Tensor, masks: torch.Tensor, losses: torch.Tensor
    ) -> torch.Tensor:
        """A scalar whose gradient in ``logits`` estimates that of the mean of ``losses``.

        ``masks`` is ``[S, E]`` (from ``sample``) and ``losses`` ``[S]``, one per mask.
        """
        losses = losses.detach()
        baseline = (losses.sum() - losses) / (losses.numel() - 1)
        log_prob = Bernoulli(logits=logits).log_prob(masks).sum(-1)  # [S]
        return ((losses - baseline) * log_prob).mean()


def make_distribution(kind: str, temperature: float | None) -> MaskDistribution:
    """The distribution for a parameterisation name; ``ValueError`` names a bad one."""
    if kind == "bernoulli_score":
        if temperature is not None:
            raise ValueError("bernoulli_score samples exact masks and takes no temperature")
        return BernoulliScoreFunction()
    if temperature is None:
        raise ValueError(f"{kind} needs a temperature")
    if kind == "hard_concrete":
        return HardConcrete(temperature)
    if kind == "gumbel_sigmoid":
        return GumbelSigmoidSTE(temperature)
    raise ValueError(f"unknown mask parameterisation {kind!r}; expected one of {PARAMETERISATIONS}")


def deterministic_mask(logits: torch.Tensor) -> torch.Tensor:
    """The mask used after training: keep an edge exactly when its logit is positive."""
    return logits > 0


def _relaxed(logits: torch.Tensor, temperature: float, n_samples: int) -> torch.Tensor:
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    temp = torch.tensor(temperature, dtype=logits.dtype, device=logits.device)
    return RelaxedBernoulli(temp, logits=logits).rsample((n_samples,))


def _check_temperature(temperature: float) -> None:
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"mask temperature must be a positive finite number, got {temperature}")
