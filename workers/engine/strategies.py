"""The three optimisations ``run_forward`` composes over ``reference_forward``'s layer loop.

Each gives the reference's result (the tests run each alone against it) and can be turned off
(``Strategies``):

1. ``SharedPrefix`` (widening): layers whose receivers every set patches alike are one run,
   computed once; the stream is widened to all sets where they first differ.
2. ``last_layer_positions`` / ``attend_layer`` (the narrowed last layer): its queries, MLP
   and logits run at the read positions only.
3. ``ProjectedQKV`` (projected q/k/v inputs): with no norm before the attention, q/k/v are
   linear in the writers, so receivers' inputs are formed already projected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from circuitreg.workers.engine.blocks import attend, attention, head_outputs
from circuitreg.workers.engine.stream import ResidualStream
from circuitreg.workers.engine.weights import LayerWeights, ModelWeights
from circuitreg.workers.graph import ComputationalGraph


@dataclass(frozen=True)
class Strategies:
    """Which optimisations ``run_forward`` uses (all, by default); with any off it computes
    the same, more slowly."""

    shared_prefix: bool = True
    narrow_last_layer: bool = True
    projected_qkv: bool = True


NONE = Strategies(shared_prefix=False, narrow_last_layer=False, projected_qkv=False)


class QKVInputs(Protocol):
    """How a layer's q (0), k (1) and v (2) receivers read the stream, and attend."""

    def read(
        self, stream: ResidualStream, coeff: torch.Tensor | None, lo: int, hi: int
    ) -> torch.Tensor:
        """Receivers ``lo:hi``'s inputs ``[hi - lo, H, S, N, T, *]`` for ``coeff [S, 3, H, k]``."""
        ...

    def attend(
        self, q: torch.Tensor, kv: torch.Tensor, query_positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The heads' ``z`` ``[H, S, N, Q, d_head]`` from what ``read`` gave."""
        ...


# -- 1. shared prefix -------------------------------------------------------------------------


class SharedPrefix:
    """ACDC's candidate sets differ only late in the model: until the first layer whose
    receivers they patch differently (``first``), every set is the same run, so it is
    computed once, as the first row, and widened there to all ``n_sets``."""

    def __init__(self, graph: ComputationalGraph, patch: torch.Tensor | None, on: bool) -> None:
        self.patch, self.on = patch, on
        self.n_sets = 1 if patch is None else patch.shape[0]
        self.first = _first_difference(graph, patch) if on else 0

    def rows(self, index: int) -> torch.Tensor | None:
        """The patch rows layer ``index`` reads (the first alone before the sets differ)."""
        return self.patch if self.patch is None or index >= self.first else self.patch[:1]

    def widens_at(self, index: int) -> bool:
        """Whether the stream is widened to every set at layer ``index``."""
        return index == self.first and self.n_sets > 1

    def attend_once_per_row(
        self, index: int, stream: ResidualStream, inputs: QKVInputs, coeff: torch.Tensor | None
    ) -> torch.Tensor | None:
        """At the widening layer, the heads' ``z`` ``[H, S, N, T, d_head]`` attending once per
        distinct coefficient row; None elsewhere, where that saves under half the rows, or
        where gradients are wanted. The stream so far is one run, so a head's q/k/v depend
        only on its own rows of ``coeff [S, 3, H, k]``: at layer 0 (one writer) 0/1 patches
        give at most 8 distinct rows per head, however many sets."""
        if not (self.on and self.widens_at(index)) or coeff is None or coeff.requires_grad:
            return None
        sets, _, heads, k = coeff.shape
        per_head = coeff.permute(2, 0, 1, 3).reshape(heads * sets, 3 * k)
        distinct, inverse = torch.unique(per_head, dim=0, return_inverse=True)
        if 2 * distinct.shape[0] > sets:
            return None
        z, _ = attend_layer(stream, inputs, distinct.view(-1, 3, 1, k).expand(-1, 3, heads, k))
        return z[torch.arange(heads, device=z.device)[:, None], inverse.view(heads, sets)]


def _first_difference(graph: ComputationalGraph, patch: torch.Tensor | None) -> int:
    """How many leading layers have receivers that every patch row treats alike."""
    if patch is None or patch.shape[0] == 1:
        return graph.n_layers
    differs = torch.nonzero((patch != patch[:1]).any(0)).flatten()
    first = int(differs[0]) if differs.numel() else graph.n_edges
    ends = [0] * graph.n_layers  # per layer, one past the last edge into its receivers
    for slot in graph.slots:
        if slot.layer is not None:
            ends[slot.layer] = max(ends[slot.layer], slot.edge_stop)
    return sum(1 for end in ends if end <= first)


# -- 2. the narrowed last layer ---------------------------------------------------------------


def last_layer_positions(
    stream: ResidualStream, positions: torch.Tensor, overridden: bool, record: bool
) -> torch.Tensor | None:
    """Where the last layer runs: nothing after its attention mixes positions, so its
    queries, its MLP and the logits are needed at the read ``positions`` only (its keys and
    values still see every position). None (everywhere) where that saves nothing, writer
    outputs are recorded, or an override gives a last-layer group at every position."""
    if record or overridden or positions.shape[1] >= stream.common.shape[2]:
        return None
    return positions


def attend_layer(
    stream: ResidualStream,
    inputs: QKVInputs,
    coeff: torch.Tensor | None,
    narrow_to: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ResidualStream]:
    """A layer's ``z`` ``[H, S, N, Q, d_head]`` and the stream the layer continues on: cut
    to ``narrow_to`` ``[N, P]`` after its keys and values are read, if given."""
    if narrow_to is None:
        x = inputs.read(stream, coeff, 0, 3)
        return inputs.attend(x[0], x[1:]), stream
    kv = inputs.read(stream, coeff, 1, 3)
    stream = stream.at(narrow_to)
    return inputs.attend(inputs.read(stream, coeff, 0, 1)[0], kv, narrow_to), stream


# -- 3. projected q/k/v inputs ----------------------------------------------------------------


class FormedQKV:
    """The plain inputs: each receiver's ``d_model``-wide input, through the layer's norm."""

    def __init__(self, layer: LayerWeights, weights: ModelWeights) -> None:
        self.layer, self.weights = layer, weights

    def read(
        self, stream: ResidualStream, coeff: torch.Tensor | None, lo: int, hi: int
    ) -> torch.Tensor:
        if coeff is None:
            return stream.resid.expand(hi - lo, self.layer.w_q.shape[0], *stream.resid.shape)
        return stream.shifted(coeff[:, lo:hi], coeff.shape[-1])

    def attend(
        self, q: torch.Tensor, kv: torch.Tensor, query_positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        scale, causal = self.weights.attn_scale, self.weights.causal
        return attention(self.layer, q, kv, scale, causal, query_positions)


class ProjectedQKV(FormedQKV):
    """With no norm before the attention, q/k/v are linear in the writers: what every set
    shares is projected once, and heads that differ per set enter through ``z @ (W_O W_Q)``
    (``ResidualStream.projected``), so no set forms a ``d_model``-wide input per receiver,
    otherwise the largest tensors of a pass."""

    def __init__(self, layer: LayerWeights, weights: ModelWeights) -> None:
        super().__init__(layer, weights)
        self.w_qkv, self.b_qkv = layer.w_qkv, layer.b_qkv

    def read(
        self, stream: ResidualStream, coeff: torch.Tensor | None, lo: int, hi: int
    ) -> torch.Tensor:
        assert coeff is not None  # ``qkv_inputs`` projects patched passes only
        w, b = self.w_qkv[lo:hi], self.b_qkv[lo:hi]
        return stream.projected(w, b, coeff[:, lo:hi], coeff.shape[-1])

    def attend(
        self, q: torch.Tensor, kv: torch.Tensor, query_positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        scale, causal = self.weights.attn_scale, self.weights.causal
        return attend(self.layer, q, kv[0], kv[1], scale, causal, query_positions)


def qkv_inputs(
    layer: LayerWeights, weights: ModelWeights, coeff: torch.Tensor | None, n_sets: int, on: bool
) -> QKVInputs:
    """``ProjectedQKV`` for a patched pass of several sets through a layer with no norm
    before its attention. One set takes the formed inputs, which sum as an unpatched run
    does, so that patching a writer with its own value changes nothing, not even by
    rounding."""
    if on and coeff is not None and layer.linear_qkv_input and n_sets > 1:
        return ProjectedQKV(layer, weights)
    return FormedQKV(layer, weights)


def add_heads(
    stream: ResidualStream, weights: ModelWeights, index: int, z: torch.Tensor, projected: bool
) -> None:
    """Add layer ``index``'s heads to the stream from their ``z``. They stay low rank where
    a later reader projects them (through ``W_O W_Q`` etc.), and are formed ``d_model``-wide
    at once unless every later reader projects or is the logits of an attention-only model
    (which read them at the read positions only)."""
    layer, following = weights.layers[index], weights.layers[index + 1 :]
    linear_later = [projected and later.linear_qkv_input for later in following]
    attn_only = layer.mlp is None
    if not (any(linear_later) or (attn_only and not following)):
        g, s, n, t, _ = z.shape
        shape = (g, s, n, t, layer.w_o.shape[-1])
        target = stream.slot(stream.count, stream.count + g, shape, z)
        stream.add(head_outputs(z, layer.w_o, out=target), layer.b_o)
        return
    stream.add_heads(z, layer.w_o, layer.b_o, form_outputs=not (attn_only and all(linear_later)))
