"""A layer's heads in the engine's forward pass: their q/k/v inputs, their attention, and
how they join the stream.

Kept apart from the layer loop in ``forward.py``: this is where the engine chooses between
forming each receiver's input, projecting it (no norm before the attention), and attending
once per distinct coefficient row where the sets first differ.
"""

from __future__ import annotations

import torch

from circuitreg.workers.engine.blocks import attend, attention, head_outputs
from circuitreg.workers.engine.stream import ResidualStream
from circuitreg.workers.engine.weights import LayerWeights, ModelWeights


def attend_sets(
    stream: ResidualStream,
    layer: LayerWeights,
    weights: ModelWeights,
    coeff: torch.Tensor,
    first_difference: bool,
) -> torch.Tensor:
    """The heads' ``z`` ``[H, S, N, T, d_head]`` for coefficient rows ``[S, 3, H, k]`` over
    every position; once per distinct row at the layer where the sets first differ."""
    z = attend_distinct(stream, layer, weights, coeff) if first_difference else None
    return attend_rows(stream, layer, weights, coeff) if z is None else z


def attend_distinct(
    stream: ResidualStream, layer: LayerWeights, weights: ModelWeights, coeff: torch.Tensor
) -> torch.Tensor | None:
    """The heads' ``z`` ``[H, S, N, T, d_head]`` at the layer where the sets first differ,
    attending once per distinct coefficient row instead of once per set; None where fewer
    than half the rows would be saved, or gradients are wanted.

    Before that layer every set is the same run, so a head's q/k/v inputs depend only on its
    own coefficients ``coeff [S, 3, H, k]``. At layer 0 each receiver has one writer, the
    input, so 0/1 patches give at most 8 distinct (q, k, v) per head however many sets:
    attention runs for the distinct rows (shared by all heads) and each set gathers its
    heads' outputs. (The induction toy, 64 random sets per pass: 8 rows, not 64.)"""
    if coeff.requires_grad:
        return None
    sets, _, heads, k = coeff.shape
    per_head = coeff.permute(2, 0, 1, 3).reshape(heads * sets, 3 * k)
    distinct, inverse = torch.unique(per_head, dim=0, return_inverse=True)
    if 2 * distinct.shape[0] > sets:
        return None
    rows = distinct.view(-1, 3, 1, k).expand(-1, 3, heads, k)
    z = attend_rows(stream, layer, weights, rows)  # [H, U, N, T, d_head]
    head_index = torch.arange(heads, device=z.device)[:, None]
    return z[head_index, inverse.view(heads, sets)]


def attend_rows(
    stream: ResidualStream, layer: LayerWeights, weights: ModelWeights, coeff: torch.Tensor
) -> torch.Tensor:
    """The heads' ``z`` for coefficient rows ``[S, 3, H, k]`` over every position: from
    projected inputs where no norm comes before the attention, else from formed ones."""
    k = coeff.shape[-1]
    if layer.linear_qkv_input:
        q, key, value = stream.projected(layer.w_qkv, layer.b_qkv, coeff, k)
        return attend(layer, q, key, value, weights.attn_scale, weights.causal)
    x = receiver_inputs(stream, coeff, 0, 3, coeff.shape[2], k)
    return attention(layer, x[0], x[1:], weights.attn_scale, weights.causal)


def add_heads(
    stream: ResidualStream, weights: ModelWeights, index: int, z: torch.Tensor, attn_only: bool
) -> None:
    """Add layer ``index``'s heads to the stream from their ``z``. They stay low rank where
    a later reader has no norm before it (it projects them through ``W_O W_Q`` etc.), and
    are formed ``d_model``-wide at once unless every later reader is such a reader or the
    logits (which need them at the read positions only)."""
    layer, following = weights.layers[index], weights.layers[index + 1 :]
    linear_later = [later.linear_qkv_input for later in following]
    if not (any(linear_later) or (attn_only and not following)):
        g, s, n, t, _ = z.shape
        shape = (g, s, n, t, layer.w_o.shape[-1])
        target = stream.slot(stream.count, stream.count + g, shape, z)
        stream.add(head_outputs(z, layer.w_o, out=target), layer.b_o)
        return
    stream.add_heads(z, layer.w_o, layer.b_o, form_outputs=not (attn_only and all(linear_later)))


def receiver_inputs(
    stream: ResidualStream, coeff: torch.Tensor | None, lo: int, hi: int, heads: int, k: int
) -> torch.Tensor:
    """Inputs ``[hi - lo, H, S, N, T, d]`` of a layer's q (0), k (1) or v (2) receivers."""
    if coeff is None:
        return stream.resid.expand(hi - lo, heads, *stream.resid.shape)
    return stream.shifted(coeff[:, lo:hi], k)
