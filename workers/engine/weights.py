"""The weights the engine needs, read once from a TransformerBridge.

The engine runs the residual-stream decomposition itself (see ``forward``) because a bridge
booted natively has no per-head result hook and no split q/k/v inputs: exact edge patching
needs both. Attention is recomputed from the bridge's stacked ``W_Q/W_K/W_V/W_O``; norms,
MLPs and the final norm are the bridge's own underlying modules, called directly, so their
activation functions and epsilons are exactly the model's. Architectures the decomposition
does not cover (rotary, grouped-query attention, soft-capping, post-embedding norm) are
refused here with a message naming the feature, and the engine checks its reconstruction
against the bridge's own logits before it is used.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

Module = Callable[[torch.Tensor], torch.Tensor]


class EngineError(RuntimeError):
    """The engine cannot run this model or these inputs; the message says what is wrong."""


@dataclass(frozen=True)
class LayerWeights:
    """One block: per-head attention weights, its norms and (unless attention-only) MLP."""

    ln1: Module
    w_q: torch.Tensor  # [H, d_model, d_head]
    w_k: torch.Tensor
    w_v: torch.Tensor
    b_q: torch.Tensor  # [H, d_head]
    b_k: torch.Tensor
    b_v: torch.Tensor
    w_o: torch.Tensor  # [H, d_head, d_model]
    b_o: torch.Tensor  # [d_model]
    ln2: Module | None
    mlp: Module | None

    @property
    def linear_qkv_input(self) -> bool:
        """Whether q/k/v are linear in the block input (no norm before the attention)."""
        return isinstance(self.ln1, nn.Identity)

    @property
    def w_qkv(self) -> torch.Tensor:
        """``W_Q, W_K, W_V`` stacked: ``[3, H, d_model, d_head]``."""
        return torch.stack((self.w_q, self.w_k, self.w_v))

    @property
    def b_qkv(self) -> torch.Tensor:
        """``b_Q, b_K, b_V`` stacked: ``[3, H, d_head]``."""
        return torch.stack((self.b_q, self.b_k, self.b_v))


@dataclass(frozen=True)
class ModelWeights:
    """Everything the engine's forward pass reads, on the model's device."""

    w_e: torch.Tensor  # [d_vocab, d_model]
    w_pos: torch.Tensor | None  # [n_ctx, d_model]
    layers: tuple[LayerWeights, ...]
    ln_final: Module
    w_u: torch.Tensor  # [d_model, d_vocab_out]
    b_u: torch.Tensor  # [d_vocab_out]
    attn_scale: float
    n_ctx: int
    device: torch.device
    dtype: torch.dtype
    # False for bidirectional attention (tracr ``reverse`` reads later positions): every
    # query then attends to every key, exactly as the model's own forward does.
    causal: bool = True

    @property
    def d_vocab(self) -> int:
        """Size of the input vocabulary."""
        return int(self.w_e.shape[0])


def _refuse_unsupported(cfg: Any) -> None:
    checks = {
        "positional_embedding_type": lambda v: v not in (None, "standard"),
        "n_key_value_heads": lambda v: v not in (None, cfg.n_heads),
        "attn_scores_soft_cap": lambda v: v is not None and v > 0,
        "output_logits_soft_cap": lambda v: v is not None and v > 0,
        "post_embedding_ln": bool,
        "use_normalization_before_and_after": bool,
        "gated_mlp": bool,
        "use_qk_norm": bool,
        "use_local_attn": bool,
        "scale_attn_by_inverse_layer_idx": bool,
    }
    for name, bad in checks.items():
        value = getattr(cfg, name, None)
        if bad(value):
            raise EngineError(
                f"the intervention engine does not support {name}={value!r} "
                "(supported: learned absolute positions, full multi-head attention, "
                "LayerNorm/RMSNorm or none, dense MLPs)"
            )
    direction = getattr(cfg, "attention_dir", "causal")
    if direction not in ("causal", "bidirectional"):
        raise EngineError(
            f"the intervention engine does not support attention_dir={direction!r} "
            "(supported: 'causal', 'bidirectional')"
        )


def _module(component: Any, what: str) -> Module:
    inner = getattr(component, "original_component", None)
    if not isinstance(inner, nn.Module):
        raise EngineError(f"the bridge's {what} has no underlying module to call")
    return inner


def _per_head_bias(
    value: torch.Tensor | None, n_heads: int, d_head: int, like: torch.Tensor
) -> torch.Tensor:
    if value is None:
        return torch.zeros(n_heads, d_head, dtype=like.dtype, device=like.device)
    return value.reshape(n_heads, d_head)


def read_weights(model: Any) -> ModelWeights:
    """Read and check the weights of a TransformerBridge (or a bridge-like model)."""
    cfg = getattr(model, "cfg", None)
    if cfg is None:
        raise EngineError(f"{type(model).__name__} has no .cfg; expected a TransformerBridge")
    _refuse_unsupported(cfg)
    n_layers, n_heads, d_head = int(cfg.n_layers), int(cfg.n_heads), int(cfg.d_head)
    with torch.no_grad():
        try:
            w_q, w_k, w_v, w_o = (t.detach() for t in (model.W_Q, model.W_K, model.W_V, model.W_O))
            b_q, b_k, b_v, b_o = (t.detach() for t in (model.b_Q, model.b_K, model.b_V, model.b_O))
            w_e, w_u = model.W_E.detach(), model.W_U.detach()
        except AttributeError as exc:
            raise EngineError(f"the model does not expose stacked weights: {exc}") from exc
        b_u = getattr(model, "b_U", None)
        b_u = torch.zeros(w_u.shape[1], dtype=w_u.dtype, device=w_u.device) if b_u is None else b_u
        w_pos = getattr(model, "W_pos", None)
    attn_only = bool(getattr(cfg, "attn_only", False))
    layers = []
    for layer in range(n_layers):
        block = model.blocks[layer]
        layers.append(
            LayerWeights(
                ln1=_module(block.ln1, f"blocks.{layer}.ln1"),
                w_q=w_q[layer],
                w_k=w_k[layer],
                w_v=w_v[layer],
                b_q=_per_head_bias(b_q[layer], n_heads, d_head, w_q),
                b_k=_per_head_bias(b_k[layer], n_heads, d_head, w_q),
                b_v=_per_head_bias(b_v[layer], n_heads, d_head, w_q),
                w_o=w_o[layer],
                b_o=b_o[layer],
                ln2=None if attn_only else _module(block.ln2, f"blocks.{layer}.ln2"),
                mlp=None if attn_only else _module(block.mlp, f"blocks.{layer}.mlp"),
            )
        )
    use_scale = getattr(cfg, "use_attn_scale", True)
    scale = float(getattr(cfg, "attn_scale", -1.0) or -1.0)
    attn_scale = scale if use_scale and scale > 0 else math.sqrt(d_head)
    return ModelWeights(
        w_e=w_e,
        w_pos=None if w_pos is None else w_pos.detach(),
        layers=tuple(layers),
        ln_final=_module(model.ln_final, "ln_final"),
        w_u=w_u,
        b_u=b_u.detach(),
        attn_scale=attn_scale,
        n_ctx=int(cfg.n_ctx),
        device=w_e.device,
        dtype=w_e.dtype,
        causal=getattr(cfg, "attention_dir", "causal") == "causal",
    )
