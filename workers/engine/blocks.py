"""The two computations of a block, on stacked per-receiver inputs, and position gathering.

Kept apart from the residual-stream bookkeeping in ``forward.py``: these are the only places
that apply a block's weights (the embedding and unembedding stay in ``forward.py``).
"""

from __future__ import annotations

import torch

from circuitreg.workers.engine.weights import LayerWeights


def attention(
    layer: LayerWeights,
    q_in: torch.Tensor,
    kv_in: torch.Tensor,
    scale: float,
    causal: bool = True,
    query_positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-head attention with separate inputs per head: queries ``q_in [S, H, N, Q, d]``,
    keys and values ``kv_in [S, 2, H, N, T, d]``.

    ``query_positions`` ``[N, Q]`` says where the queries sit when they are not every
    position (the last layer, read only where the metric looks); ``causal`` masks keys after
    each query, while bidirectional models (``causal=False``) attend to every position, so a
    patched edge there also reaches earlier positions.

    Returns each head's output ``[S, N, Q, H, d]`` (z @ W_O, without the bias).
    """
    q = torch.einsum("shntd,hde->shnte", layer.ln1(q_in), layer.w_q) + layer.b_q[:, None, None]
    normed = layer.ln1(kv_in)
    k = torch.einsum("shntd,hde->shnte", normed[:, 0], layer.w_k) + layer.b_k[:, None, None]
    v = torch.einsum("shntd,hde->shnte", normed[:, 1], layer.w_v) + layer.b_v[:, None, None]
    scores = torch.einsum("shnqe,shnke->shnqk", q, k) / scale
    if causal:
        keys = torch.arange(scores.shape[-1], device=scores.device)
        if query_positions is None:
            future = keys[None, :] > keys[:, None]  # [Q=T, T]
        else:
            future = keys > query_positions.to(scores.device)[..., None]  # [N, Q, T]
        scores = scores.masked_fill(future, float("-inf"))
    pattern = torch.softmax(scores, dim=-1)
    z = torch.einsum("shnqk,shnke->shnqe", pattern, v)
    return torch.einsum("shnte,hed->snthd", z, layer.w_o)


def mlp(layer: LayerWeights, x: torch.Tensor) -> torch.Tensor:
    """The block's MLP on its (per-set) input ``[S, N, T, d]``, through ``ln2``."""
    assert layer.ln2 is not None and layer.mlp is not None
    s, n, t, d = x.shape
    out = layer.mlp(layer.ln2(x).reshape(s * n, t, d))
    if isinstance(out, tuple):
        out = out[0]
    return out.reshape(s, n, t, d)


def at_positions(values: torch.Tensor, axis: int, positions: torch.Tensor) -> torch.Tensor:
    """``values`` with its example axis ``axis`` (size N or 1) and token axis ``axis + 1``
    narrowed to each example's ``positions [N, P]``: ``[..., N, P, ...]``, contiguous."""
    n = positions.shape[0]
    rows = torch.arange(n, device=positions.device)[:, None]
    moved = values.movedim((axis, axis + 1), (0, 1))
    picked = moved.expand(n, *moved.shape[1:])[rows, positions]
    return picked.movedim((0, 1), (axis, axis + 1)).contiguous()
