"""Configurations of the tiny random ``boot_native`` bridges the engine tests share."""

from __future__ import annotations

from typing import Any

ATTN_ONLY: dict[str, Any] = dict(
    n_layers=2, d_model=32, n_heads=4, d_head=8, d_vocab=40, n_ctx=24,
    attn_only=True, act_fn="gelu", normalization_type=None, seed=0,
)  # fmt: skip
WITH_MLP: dict[str, Any] = dict(
    n_layers=2, d_model=32, n_heads=4, d_head=8, d_vocab=40, n_ctx=24, d_mlp=64,
    attn_only=False, act_fn="gelu", normalization_type="LN", seed=1,
)  # fmt: skip
