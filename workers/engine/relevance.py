"""Relevance rules: the forward pass whose backward pass propagates LRP relevance (RelP).

Layer-wise relevance propagation (LRP) through a transformer can be written as "gradient x
input with a modified backward": every nonlinear operation keeps its forward value but is
differentiated as if some of its factors were constants, which turns the network, locally,
into the linear map that redistributes relevance by the chosen rules (Achtibat et al. 2024,
"AttnLRP"; Ali et al. 2022). RelP (Rezaei Jafari et al. 2025) uses these coefficients in
place of the plain gradient in attribution patching; it names four rules, three of which
apply to the models the engine runs:

- LN-rule (Ali et al. 2022): in ``LayerNorm`` / ``RMSNorm`` the normalising scale
  ``sqrt(var + eps)`` is a constant, so the norm is linear in its input (centring and the
  affine weight kept). Caught as ``F.layer_norm`` / ``F.rms_norm`` and, for norms written out
  of tensor operations, as ``sqrt`` / ``rsqrt``, which nothing else in the forward calls.
- Identity-rule (Rezaei Jafari et al. 2024): an elementwise activation ``y = act(x)`` is
  differentiated as ``x * (act(x) / x)`` with the ratio constant, so it passes relevance
  through unchanged (``y * grad``); where ``|x|`` is at rounding level the ratio is taken as
  0 (the unit carries no relevance). Caught as the activation functions below and as the
  activation modules inside the MLPs (``GELU``, ``NewGELUActivation`` ...), so composite
  activations written out of ``tanh`` are handled as one.
- AH-rule (Ali et al. 2022, "conservative propagation"): the attention probabilities are a
  constant, so a head is linear in its values and relevance flows through values only; the
  queries and keys receive none (an edge into a head's q or k scores 0).
- Half-rule for multiplicative gates (gated MLPs): the engine refuses gated MLPs, so unused.

Linear layers keep their gradient (LRP-0, which is gradient x input). Forward values are
unchanged, bitwise: each rule returns ``value.detach() + (s - s.detach())`` for a surrogate
``s`` with the wanted derivative, and ``s - s.detach()`` is exactly 0. Biases absorb
relevance, so conservation (the relevance entering a node equals what leaves it) holds
exactly for bias-free models only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from circuitreg.workers.engine.weights import ModelWeights

TINY = 1e-6  # |x| below which an activation's ratio act(x)/x is taken as 0

ACTIVATIONS: frozenset[Callable[..., Any]] = frozenset(
    {F.gelu, F.relu, torch.relu, torch.Tensor.relu, F.silu, F.leaky_relu, F.elu, F.mish}
)
ACTIVATION_MODULES = (nn.GELU, nn.ReLU, nn.SiLU, nn.LeakyReLU, nn.ELU, nn.Mish)
SOFTMAX: frozenset[Callable[..., Any]] = frozenset(
    {torch.softmax, F.softmax, torch.Tensor.softmax, torch.special.softmax}
)
SCALES: frozenset[Callable[..., Any]] = frozenset(
    {torch.sqrt, torch.Tensor.sqrt, torch.rsqrt, torch.Tensor.rsqrt}
)


def with_gradient_of(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """``value`` exactly, differentiated as ``surrogate`` is."""
    return value.detach() + (surrogate - surrogate.detach())


def identity_rule(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y = act(x)`` differentiated as ``x * (y / x)`` with the ratio held constant."""
    small = x.abs() < TINY
    ratio = torch.where(small, torch.zeros_like(y), y / torch.where(small, torch.ones_like(x), x))
    return with_gradient_of(y, x * ratio.detach())


def _layer_norm(
    x: torch.Tensor,
    shape: Any,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    dims = tuple(range(-len(tuple(shape)), 0))
    value = F.layer_norm(x, shape, weight, bias, eps)
    centred = x - x.mean(dims, keepdim=True)
    surrogate = centred / (centred.pow(2).mean(dims, keepdim=True) + eps).sqrt().detach()
    if weight is not None:
        surrogate = surrogate * weight
    return with_gradient_of(value, surrogate)


def _rms_norm(
    x: torch.Tensor, shape: Any, weight: torch.Tensor | None = None, eps: float | None = None
) -> torch.Tensor:
    dims = tuple(range(-len(tuple(shape)), 0))
    value = F.rms_norm(x, shape, weight, eps)
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    surrogate = x / (x.pow(2).mean(dims, keepdim=True) + eps).sqrt().detach()
    if weight is not None:
        surrogate = surrogate * weight
    return with_gradient_of(value, surrogate)


@dataclass(frozen=True)
class RelevanceRules:
    """Which LRP rules the forward pass applies (all, by default; none is the gradient)."""

    norm: bool = True  # LN-rule
    activation: bool = True  # Identity-rule
    attention: bool = True  # AH-rule

    @contextmanager
    def applied(self, weights: ModelWeights) -> Iterator[None]:
        """Within this, the forward on ``weights`` differentiates by these rules."""
        with ExitStack() as stack:
            stack.enter_context(_RuleMode(self))
            if self.activation:
                for layer in weights.layers:
                    if isinstance(layer.mlp, nn.Module):
                        for module in layer.mlp.modules():
                            if _is_activation_module(module):
                                hook = module.register_forward_hook(_activation_hook)
                                stack.callback(hook.remove)
            yield


def _is_activation_module(module: nn.Module) -> bool:
    return isinstance(module, ACTIVATION_MODULES) or type(module).__name__.endswith("Activation")


def _activation_hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
    if (
        len(inputs) == 1
        and isinstance(inputs[0], torch.Tensor)
        and isinstance(output, torch.Tensor)
    ):
        return identity_rule(inputs[0], output)
    return output


class _RuleMode(TorchFunctionMode):
    """Applies the rules to the torch functions they concern, while active."""

    def __init__(self, rules: RelevanceRules) -> None:
        super().__init__()
        self.rules = rules

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        rules = self.rules
        if rules.norm and func is F.layer_norm:
            return _layer_norm(*args, **kwargs)
        if rules.norm and func is F.rms_norm:
            return _rms_norm(*args, **kwargs)
        out = func(*args, **kwargs)
        if rules.norm and func in SCALES:
            return out.detach()
        if rules.attention and func in SOFTMAX:
            return out.detach()
        if rules.activation and func in ACTIVATIONS:
            return identity_rule(args[0], out)
        return out
