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
from torch.distributions import RelaxedBernoulli

Parameterisation = Literal["hard_concrete", "gumbel_sigmoid"]
PARAMETERISATIONS: tuple[Parameterisation, ...] = ("hard_concrete", "gumbel_sigmoid")

# Stretch interval of the hard-concrete distribution, the values of Louizos et al. and of
# the Edge Pruning code: wide enough that a logit of a few units already clamps to 0 or 1.
HARD_CONCRETE_GAMMA = -0.1
HARD_CONCRETE_ZETA = 1.1


class MaskDistribution(Protocol):
    """A per-edge mask distribution driven by learnable logits."""

    def sample(self, logits: torch.Tensor, n_samples: int) -> torch.Tensor:
        """``[n_samples, *logits.shape]`` masks in ``[0, 1]``, differentiable in ``logits``."""
        ...

    def expected_density(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-edge probability that the mask is non-zero (the expected L0 per edge)."""
        ...


class HardConcrete:
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


class GumbelSigmoidSTE:
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


def make_distribution(kind: str, temperature: float) -> MaskDistribution:
    """The distribution for a parameterisation name; ``ValueError`` names a bad one."""
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
