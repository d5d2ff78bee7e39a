"""Positional edge patching: every edge patched per position label, many sets per pass.

A positional patch gives each edge one coefficient per label of a ``PositionMap`` (token
``q`` in ``index`` mode, a named span or ``other`` in ``spans`` mode): ``patch[s, e, q]``
is how much of the ablated value edge ``e`` carries at the tokens that count towards label
``q`` (each prompt's own tokens of that span). The formula is ``reference.py``'s, with the
coefficient taken per token instead of per edge:

    x_r[n, t] = b + sum_w out_w[n, t] + sum_w patch[s, e(w, r), label[n, t]] * change_w[n, t]

``change_w = ablated_w - out_w`` (exact) or the fixed delta. With the same coefficient at
every label this is the unpositioned patch (the tests hold it to the fast engine).

Why a forward of its own rather than the fast stream (``forward.py``, ``stream.py``): that
stream mixes the writers' shared rows for all sets with one matrix product per layer,
``[R*S, 1 + k] @ [1 + k, N*T*d]``, which works because a reader's coefficients are the
same at every token. Positional coefficients differ per token, so here every set keeps its
writers' outputs ``[S, N, T, W, d]`` (one buffer, written as the layers go), and each
layer's readers take one batched product per token, ``[R, k] @ [k, d]`` over the writers'
changes: about ``readers x writers x d`` multiply-adds per token and set, the same count as
the fast stream's shared-row product but in ``S*N*T`` small products, plus a pass over the
``k`` writers' changes per set (the fast stream forms no per-set change). The cost against
the fast stream is measured in ``bench/positional_patching.py`` (bench/results/
positional_patching.md). The blocks (``attention``, ``head_outputs``, ``mlp``) are the
ones every forward uses, and the last layer runs its queries, heads and MLP at the read
positions only (its keys and values at every position).

Each token's coefficients are gathered from the patch by the batch's label map (``[N, T]``
label numbers, ``PositionMap.assign``): the same as the one-hot contraction
``einsum("skq,ntq->sntk")`` without its ``Q``-fold multiply-adds. Gradients flow to
``patch`` and ``embedded`` when they require them (mask pruning, path patching's
derivatives).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from circuitreg.workers.engine.blocks import at_positions, attention, head_outputs, mlp
from circuitreg.workers.engine.forward import ForwardOutput
from circuitreg.workers.engine.weights import EngineError, ModelWeights
from circuitreg.workers.graph import ComputationalGraph, ReceiverSlot


@dataclass
class _Stream:
    """The writers so far of every set: their outputs side by side ``[S, N, T, W, d]``
    (filled up to ``count``), their sum plus the biases read with them (``resid``
    ``[S, N, T, d]``), each token's label ``[N, T]`` and what a patched edge brings
    (``source`` ``[N|1, T, W, d]``: ablated outputs, or the fixed delta)."""

    outputs: torch.Tensor
    count: int
    resid: torch.Tensor
    labels: torch.Tensor
    source: torch.Tensor
    exact: bool

    def add(self, group: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Append writer outputs ``[S, N, T, g, d]`` (and add the bias they come with)."""
        lo, hi = self.count, self.count + group.shape[3]
        self.outputs[:, :, :, lo:hi] = group
        self.resid = self.resid + group.sum(3)
        if bias is not None:
            self.resid = self.resid + bias
        self.count = hi

    def read(self, patch: torch.Tensor, start: int, readers: int, k: int) -> torch.Tensor:
        """The inputs ``[R, S, N, T, d]`` of ``readers`` consecutive slots reading writers
        ``0:k`` whose edges begin at ``start`` (``patch`` ``[S, E, Q]``)."""
        if k != self.count:
            raise EngineError(f"a reader of writers 0:{k} read after {self.count} writers")
        s, _, q = patch.shape
        coeff = patch[:, start : start + readers * k].view(s, readers, k, q)
        per_token = coeff.permute(0, 3, 1, 2)[:, self.labels]  # [S, N, T, R, k]
        source = self.source[..., :k, :]
        change = source - self.outputs[:, :, :, :k] if self.exact else source
        mixed = torch.matmul(per_token, change)  # [S, N, T, R, d]
        mixed += self.resid.unsqueeze(3)  # in place: the product's backward needs no output
        return mixed.permute(3, 0, 1, 2, 4)

    def at(self, positions: torch.Tensor) -> _Stream:
        """This stream at each example's ``positions`` ``[N, P]`` only (copies)."""
        rows = torch.arange(positions.shape[0], device=positions.device)[:, None]
        return _Stream(
            outputs=at_positions(self.outputs, 1, positions),
            count=self.count,
            resid=at_positions(self.resid, 1, positions),
            labels=self.labels[rows, positions],
            source=at_positions(self.source, 0, positions),
            exact=self.exact,
        )


def positional_forward(
    weights: ModelWeights,
    graph: ComputationalGraph,
    embedded: torch.Tensor,
    positions: torch.Tensor,
    patch: torch.Tensor,
    labels: torch.Tensor,
    ablated: torch.Tensor | None = None,
    delta: torch.Tensor | None = None,
) -> ForwardOutput:
    """Logits at the read positions ``[S, N, P, V]`` under positional patches.

    ``embedded`` ``[N, T, d]`` is the input node's output, ``positions`` ``[N, P]`` where
    the logits are read, ``patch`` ``[S, n_edges, Q]``, ``labels`` ``[N, T]`` each token's
    label number (``0..Q-1``), ``ablated`` or ``delta`` ``[N|1, T, W, d]``.
    """
    _check(graph, embedded, patch, labels, ablated, delta)
    s, (n, t, d) = patch.shape[0], embedded.shape
    patch = patch.to(embedded.dtype)
    source = ablated if delta is None else delta
    assert source is not None
    buffer = embedded.new_empty(s, n, t, len(graph.writers), d)
    first = embedded.expand(s, n, t, d)
    stream = _Stream(buffer, 0, torch.zeros_like(first), labels, source, delta is None)
    stream.add(first.unsqueeze(3))
    h, last = graph.n_heads, len(weights.layers) - 1
    layers = zip(weights.layers, _slots(graph), strict=True)
    for index, (layer, (q_slot, mlp_slot)) in enumerate(layers):
        k, narrow = len(q_slot.writers), None
        if index == last:  # only the read positions' queries reach the logits
            narrow = stream.at(positions)
            q_in = narrow.read(patch, q_slot.edge_start, h, k)
            kv_in = stream.read(patch, q_slot.edge_start + h * k, 2 * h, k).unflatten(0, (2, h))
        else:
            qkv = stream.read(patch, q_slot.edge_start, 3 * h, k).unflatten(0, (3, h))
            q_in, kv_in = qkv[0], qkv[1:]
        read_at = None if narrow is None else positions
        z = attention(layer, q_in, kv_in, weights.attn_scale, weights.causal, read_at)
        stream = stream if narrow is None else narrow
        if mlp_slot is not None and graph.parallel_attn_mlp:
            mlp_in = _read_one(stream, patch, mlp_slot)
        stream.add(head_outputs(z, layer.w_o).permute(1, 2, 3, 0, 4), layer.b_o)
        if mlp_slot is not None:
            if not graph.parallel_attn_mlp:
                mlp_in = _read_one(stream, patch, mlp_slot)
            stream.add(mlp(layer, mlp_in).unsqueeze(3))
    at_read = stream if weights.layers else stream.at(positions)  # the last layer narrowed it
    resid = _read_one(at_read, patch, graph.slots[-1])  # [S, N, P, d]
    return ForwardOutput(weights.ln_final(resid) @ weights.w_u + weights.b_u, None)


def _read_one(stream: _Stream, patch: torch.Tensor, slot: ReceiverSlot) -> torch.Tensor:
    """One reader's input ``[S, N, T, d]`` (an MLP, the logits)."""
    return stream.read(patch, slot.edge_start, 1, len(slot.writers))[0]


def _slots(graph: ComputationalGraph) -> list[tuple[ReceiverSlot, ReceiverSlot | None]]:
    """Per layer, its first q slot (the layer's 3 x H q/k/v slots follow it, each reading
    the same writers) and its MLP's slot."""
    by_layer: list[list[ReceiverSlot]] = [[] for _ in range(graph.n_layers)]
    for slot in graph.slots:
        if slot.layer is not None:
            by_layer[slot.layer].append(slot)
    return [(slots[0], None if graph.attn_only else slots[-1]) for slots in by_layer]


def _check(
    graph: ComputationalGraph,
    embedded: torch.Tensor,
    patch: torch.Tensor,
    labels: torch.Tensor,
    ablated: torch.Tensor | None,
    delta: torch.Tensor | None,
) -> None:
    """Raise ``EngineError`` unless the arguments fit each other and the graph."""
    if patch.ndim != 3 or patch.shape[1] != graph.n_edges:
        raise EngineError(
            f"a positional patch is [S, {graph.n_edges} edges, Q], got {tuple(patch.shape)}"
        )
    n, t = embedded.shape[:2]
    if tuple(labels.shape) != (n, t):
        raise EngineError(f"labels are {tuple(labels.shape)} but the prompts are ({n}, {t})")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= patch.shape[2]):
        raise EngineError(f"labels must lie in 0..{patch.shape[2] - 1} (the patch's positions)")
    if (ablated is None) == (delta is None):
        raise EngineError("positional patching needs the ablated outputs or a fixed delta")
    for slot in graph.slots:
        if slot.writers != tuple(range(len(slot.writers))):
            raise EngineError(f"{slot.node} does not read a prefix of the writers")
