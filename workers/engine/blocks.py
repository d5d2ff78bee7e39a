"""The two computations of a block, on stacked per-receiver inputs, and position gathering.

Kept apart from the residual-stream bookkeeping (``stream.py``) and the layer loops
(``forward.py``, ``reference.py``): these are the only places that apply a block's weights
(the embedding and unembedding stay in the loops).
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
    """Per-head attention with separate inputs per head, receiver-major: queries
    ``q_in [H, S, N, Q, d]``, keys and values ``kv_in [2, H, S, N, T, d]``.

    Returns each head's ``z`` ``[H, S, N, Q, d_head]`` (``head_outputs`` applies ``W_O``); see
    ``attend`` for ``causal`` and ``query_positions``.
    """
    q = project(layer.ln1(q_in), layer.w_q, layer.b_q)
    normed = layer.ln1(kv_in)
    k = project(normed[0], layer.w_k, layer.b_k)
    v = project(normed[1], layer.w_v, layer.b_v)
    return attend(layer, q, k, v, scale, causal, query_positions)


def attend(
    layer: LayerWeights,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    causal: bool = True,
    query_positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention from per-head queries ``q [H, S, N, Q, d_head]``, keys and values
    ``[H, S, N, T, d_head]`` (biases included) to each head's ``z`` ``[H, S, N, Q, d_head]``
    (the pattern-weighted values, before ``W_O``: the stream keeps heads low rank).

    ``query_positions`` ``[N, Q]`` says where the queries sit when they are not every
    position (the last layer, read only where the metric looks); ``causal`` masks keys after
    each query, while bidirectional models (``causal=False``) attend to every position, so a
    patched edge there also reaches earlier positions. Heads lead every tensor so that each
    product is one ``bmm`` over contiguous memory: with the sets first, ``einsum`` copied
    every per-head input to put the head axis in front.
    """
    h, s, n, q_len, d_head = q.shape
    t = k.shape[-2]
    batch = h * s * n
    scores = torch.bmm(q.reshape(batch, q_len, d_head), k.reshape(batch, t, d_head).mT)
    scores = (scores / scale).view(h, s, n, q_len, t)
    if causal:
        keys = torch.arange(t, device=scores.device)
        if query_positions is None:
            future = keys[None, :] > keys[:, None]  # [Q=T, T]
        else:
            future = keys > query_positions.to(scores.device)[..., None]  # [N, Q, T]
        scores = scores.masked_fill(future, float("-inf"))
    pattern = torch.softmax(scores, dim=-1).view(batch, q_len, t)
    z = torch.bmm(pattern, v.reshape(batch, t, d_head))
    return z.view(h, s, n, q_len, d_head)


def head_outputs(
    z: torch.Tensor, w_o: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Each head's output ``z @ W_O`` (without the bias) from ``z [H, S, N, Q, d_head]`` and
    ``w_o [H, d_head, d]``: ``[H, S, N, Q, d]``, written into ``out`` if given (contiguous)."""
    h, s, n, q_len, d_head = z.shape
    flat = z.reshape(h, s * n * q_len, d_head)
    if out is not None:
        torch.bmm(flat, w_o, out=out.view(h, s * n * q_len, -1))
        return out
    return torch.bmm(flat, w_o).view(h, s, n, q_len, -1)


def project(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Each head's input ``x [H, *M, d]`` times its ``weight [H, d, e]`` plus ``bias [H, e]``:
    ``[H, *M, e]``, one ``bmm`` over the heads."""
    heads, d = x.shape[0], x.shape[-1]
    out = torch.baddbmm(bias[:, None, :], x.reshape(heads, -1, d), weight)
    return out.view(*x.shape[:-1], weight.shape[-1])


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
