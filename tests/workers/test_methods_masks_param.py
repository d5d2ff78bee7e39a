"""The mask distributions: support, expected density, the straight-through gradient and the
score-function estimate."""

from __future__ import annotations

import pytest
import torch

from circuitreg.workers.methods.masks_param import (
    BernoulliScoreFunction,
    GumbelSigmoidSTE,
    HardConcrete,
    deterministic_mask,
    make_distribution,
)

LOGITS = torch.tensor([-3.0, -1.0, 0.0, 0.5, 2.0])


def test_hard_concrete_hits_exact_zeros_and_ones_and_its_l0_matches_sampling() -> None:
    torch.manual_seed(0)
    dist = HardConcrete(temperature=2 / 3)
    samples = dist.sample(LOGITS, 20_000)
    assert samples.shape == (20_000, 5)
    assert samples.min() == 0.0 and samples.max() == 1.0
    assert ((samples > 0) & (samples < 1)).any(), "the relaxation must also take values between"
    torch.testing.assert_close(
        (samples > 0).float().mean(0), dist.expected_density(LOGITS), atol=0.015, rtol=0
    )


def test_gumbel_sigmoid_is_hard_forward_and_relaxed_backward() -> None:
    dist = GumbelSigmoidSTE(temperature=1.0)
    logits = LOGITS.clone().requires_grad_(True)
    torch.manual_seed(0)
    hard = dist.sample(logits, 20_000)
    assert set(hard.unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(
        hard.detach().mean(0), dist.expected_density(LOGITS), atol=0.015, rtol=0
    )
    weights = torch.linspace(-1, 1, 5)
    (hard * weights).sum().backward()
    # Same noise, relaxed sample only: the straight-through gradient is its gradient.
    relaxed_logits = LOGITS.clone().requires_grad_(True)
    torch.manual_seed(0)
    noise_free = torch.distributions.RelaxedBernoulli(torch.tensor(1.0), logits=relaxed_logits)
    (noise_free.rsample((20_000,)) * weights).sum().backward()
    assert logits.grad is not None and relaxed_logits.grad is not None
    torch.testing.assert_close(logits.grad, relaxed_logits.grad)


def test_the_score_function_estimates_the_gradient_of_a_loss_with_no_derivative() -> None:
    """A loss that counts how many masks are on, weighted, through a step: the relaxations'
    derivative is 0 everywhere, its expectation's gradient is ``w * p * (1 - p)``."""
    dist = BernoulliScoreFunction()
    weights = torch.linspace(-1, 1, 5)
    logits = LOGITS.clone().requires_grad_(True)
    torch.manual_seed(0)
    masks = dist.sample(logits, 40_000)
    assert set(masks.unique().tolist()) == {0.0, 1.0} and not masks.requires_grad
    torch.testing.assert_close(masks.mean(0), dist.expected_density(LOGITS), atol=0.01, rtol=0)
    losses = ((masks > 0.5).float() * weights).sum(-1)
    dist.objective(logits, masks, losses).backward()
    p = torch.sigmoid(LOGITS)
    assert logits.grad is not None
    torch.testing.assert_close(logits.grad, weights * p * (1 - p), atol=0.01, rtol=0)
    with pytest.raises(ValueError, match="n_samples >= 2"):
        dist.sample(LOGITS, 1)


def test_deterministic_mask_and_bad_settings() -> None:
    assert deterministic_mask(LOGITS).tolist() == [False, False, False, True, True]
    with pytest.raises(ValueError, match="parameterisation"):
        make_distribution("bernoulli", 1.0)
    with pytest.raises(ValueError, match="no temperature"):
        make_distribution("bernoulli_score", 1.0)
    with pytest.raises(ValueError, match="temperature"):
        make_distribution("hard_concrete", -1.0)
    with pytest.raises(ValueError, match="n_samples"):
        HardConcrete(0.5).sample(LOGITS, 0)
