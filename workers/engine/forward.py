"""The residual-stream forward pass with per-edge interventions, for many edge sets at once.

Every reader input (a head's q, k or v input, an MLP input, the logits) is the sum of the
outputs of the writers before it (plus the attention output biases, which belong to no node
and are never patched, as in EAP-IG). An intervention set is a row of ``patch`` ``[S, E]``
with one coefficient per edge: reader ``r`` receives

    sum_w out_w + sum_w patch[e(w, r)] * (ablated_w - out_w)        (mode "exact")
    sum_w out_w + sum_w patch[e(w, r)] * delta_w                    (fixed ``delta``)

so a 0/1 row patches exactly the chosen edges from the ablated run, recomputing everything
downstream; fractional rows interpolate, and gradients with respect to ``patch`` at zero are
edge attribution scores. The S sets are stacked in front of the batch, so one pass evaluates
them all. Each reader sees a prefix of the writers (they are in topological order), so a
layer's receivers take one ``einsum`` per earlier writer group. Layers whose receivers every
set patches alike (ACDC's candidates differ only late in the model) are computed once for
all sets, and the stream is widened where the sets first differ. The last layer runs its
queries, its MLP and the logits at the read positions only (nothing after it mixes
positions); its keys and values still see every position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from circuitreg.workers.engine.blocks import at_positions, attention, mlp
from circuitreg.workers.engine.weights import EngineError, ModelWeights
from circuitreg.workers.graph import ComputationalGraph


@dataclass(frozen=True)
class Override:
    """Replace the outputs of writers ``start:stop`` with fixed values ``[N|1, T, k, d]``."""

    start: int
    stop: int
    values: torch.Tensor


@dataclass
class ForwardOutput:
    """Logits at the read positions ``[S, N, P, V]`` and, if recorded, writer outputs."""

    logits: torch.Tensor
    writer_outputs: torch.Tensor | None  # [S, N, T, W, d]


def embed(weights: ModelWeights, tokens: torch.Tensor) -> torch.Tensor:
    """The ``input`` node's output: token plus position embedding, ``[N, T, d]``."""
    if tokens.shape[1] > weights.n_ctx:
        raise EngineError(f"prompts of {tokens.shape[1]} tokens exceed n_ctx={weights.n_ctx}")
    if int(tokens.max()) >= weights.d_vocab or int(tokens.min()) < 0:
        raise EngineError(f"token ids outside the vocabulary 0..{weights.d_vocab - 1}")
    out = weights.w_e[tokens]
    if weights.w_pos is not None:
        out = out + weights.w_pos[: tokens.shape[1]]
    return out


class _Stream:
    """Writer outputs so far, their running sum, and each group's patch difference.

    A group is the writers produced together (the input, a layer's heads, an MLP). When it is
    added, its difference ``ablated - output`` (exact) or its fixed ``delta`` is stored once,
    writer-major, so every later reader's intervention is one matrix product per group and
    nothing is concatenated or copied again.
    """

    def __init__(
        self,
        first: torch.Tensor,
        ablated: torch.Tensor | None,
        delta: torch.Tensor | None,
        track: bool,
        record: bool,
    ) -> None:
        self.ablated, self.delta, self.track, self.record = ablated, delta, track, record
        self.outputs: list[torch.Tensor] = []
        self.diffs: list[tuple[int, int, torch.Tensor]] = []
        self.count = 0
        self.resid = torch.zeros_like(first)
        self.add(first.unsqueeze(-2))

    def add(self, outputs: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Append a group of writer outputs ``[S, N, T, g, d]``."""
        lo, hi = self.count, self.count + outputs.shape[-2]
        if self.record:
            self.outputs.append(outputs)
        if self.track:
            if self.delta is not None:  # fixed: [g, N|1, T, d], shared by every set
                diff = self.delta[..., lo:hi, :].permute(2, 0, 1, 3)
            elif self.ablated is not None:  # exact: [S, g, N, T, d]
                diff = (self.ablated[..., lo:hi, :].unsqueeze(0) - outputs).permute(0, 3, 1, 2, 4)
            else:
                raise EngineError("patching needs the ablated writer outputs or a fixed delta")
            self.diffs.append((lo, hi, diff.contiguous()))
        self.count = hi
        # A one-writer group (an MLP, a one-head layer) needs no reduction: a sum would
        # zero-fill and copy a buffer the size of the stream.
        total = outputs[..., 0, :] if outputs.shape[-2] == 1 else outputs.sum(-2)
        self.resid = self.resid + total
        if bias is not None:
            self.resid = self.resid + bias

    def shifted(self, base: torch.Tensor, coeff: torch.Tensor, k: int) -> torch.Tensor:
        """``base`` plus the sum over writers ``0:k`` of coefficient x difference.

        ``coeff`` is ``[S, *R, k]`` (``R``: the receiver dims, e.g. ``(3, H)`` for a layer's
        q/k/v inputs); ``base`` broadcasts to ``[S, *R, N, T, d]``, the shape returned. Each
        group is one (batched) matrix product accumulated in place into a single buffer:
        these passes are bound by memory traffic, and a fresh tensor per group and per sum
        doubled it (the profile of tracr ``reverse``, whose groups are single heads).
        """
        first = self.diffs[0][2]
        n, t, d = first.shape[-3:]
        s, receivers = coeff.shape[0], tuple(coeff.shape[1:-1])
        r = 1
        for size in receivers:
            r *= size
        # A fresh buffer (never a view of ``base``: it is written in place below).
        out = torch.empty(s, *receivers, n, t, d, dtype=base.dtype, device=base.device)
        out.copy_(base.expand_as(out))
        flat = out.view(s, r, n * t * d)
        flat_coeff = coeff.reshape(s, r, k)
        for lo, hi, diff in self.diffs:
            if hi > k:
                if lo < k:
                    raise EngineError(f"reader boundary {k} splits writer group {lo}:{hi}")
                break
            g = hi - lo
            if diff.ndim == 4:  # fixed delta [g, N|1, T, d], shared by every set
                shared = diff.expand(g, n, t, d).reshape(g, n * t * d)
                flat.view(s * r, n * t * d).addmm_(flat_coeff[..., lo:hi].reshape(s * r, g), shared)
            else:  # exact [S, g, N, T, d]
                flat.baddbmm_(flat_coeff[..., lo:hi], diff.reshape(s, g, n * t * d))
        return out

    def term_at(
        self, coeff: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """Sum over all writers at the read positions: ``coeff [S, W]`` -> ``[S, N, P, d]``."""
        total: torch.Tensor | None = None
        for lo, hi, diff in self.diffs:
            if diff.ndim == 4:
                if diff.shape[1] == 1:
                    picked = diff[:, 0][:, positions]
                else:
                    picked = diff[:, rows, positions]
                part = torch.einsum("sg,gnpd->snpd", coeff[:, lo:hi], picked)
            else:
                picked = diff[:, :, rows, positions]
                part = torch.einsum("sg,sgnpd->snpd", coeff[:, lo:hi], picked)
            total = part if total is None else total + part
        assert total is not None
        return total

    def expand(self, n_sets: int) -> None:
        """Widen a single-set stream to ``n_sets`` identical sets (views, no copies)."""
        self.resid = self.resid.expand(n_sets, *self.resid.shape[1:])
        self.outputs = [o.expand(n_sets, *o.shape[1:]) for o in self.outputs]
        self.diffs = [
            (lo, hi, d.expand(n_sets, *d.shape[1:]) if d.ndim == 5 else d)
            for lo, hi, d in self.diffs
        ]

    def stacked(self) -> torch.Tensor:
        """All recorded writer outputs ``[S, N, T, W, d]``."""
        return torch.cat(self.outputs, dim=-2)

    def at(self, positions: torch.Tensor) -> _Stream:
        """This stream narrowed to each example's ``positions [N, P]`` (copies, not views):
        from there on the pass computes only what the read positions need."""
        narrow = _Stream.__new__(_Stream)
        narrow.ablated = None if self.ablated is None else at_positions(self.ablated, 0, positions)
        narrow.delta = None if self.delta is None else at_positions(self.delta, 0, positions)
        narrow.track, narrow.record = self.track, False
        narrow.outputs, narrow.count = [], self.count
        narrow.resid = at_positions(self.resid, 1, positions)
        # exact diffs [S, g, N, T, d]; fixed deltas [g, N|1, T, d]
        narrow.diffs = [
            (lo, hi, at_positions(d, d.ndim - 3, positions)) for lo, hi, d in self.diffs
        ]
        return narrow


def run_forward(
    weights: ModelWeights,
    graph: ComputationalGraph,
    embedded: torch.Tensor,
    positions: torch.Tensor,
    patch: torch.Tensor | None = None,
    ablated: torch.Tensor | None = None,
    delta: torch.Tensor | None = None,
    override: Override | None = None,
    record: bool = False,
) -> ForwardOutput:
    """Run the model with edge interventions; see the module docstring.

    ``embedded`` ``[N, T, d]`` is the input node's output; ``positions`` ``[N, P]`` where logits
    are read; ``patch`` ``[S, E]`` (None: one unpatched run); ``ablated`` and ``delta``
    ``[N|1, T, W, d]``. With ``record`` the writer outputs are returned too.
    """
    if patch is not None:
        graph.check_edge_vector(patch)
        patch = patch.to(embedded.dtype)
    n_sets = 1 if patch is None else patch.shape[0]
    shared = _shared_layers(graph, patch)
    heads = graph.n_heads
    first = embedded.unsqueeze(0)
    if override is not None and override.start == 0:
        first = override.values[..., 0, :].unsqueeze(0).expand_as(first)
    # The stream starts as one set; it is widened to all sets at the first layer whose
    # receivers some set patches differently (everything before is identical, computed once).
    stream = _Stream(first, ablated, delta, track=patch is not None, record=record)
    rows = patch if patch is None else patch[:1]
    slots = iter(graph.slots)
    last = len(weights.layers) - 1
    for index, layer in enumerate(weights.layers):
        if index == shared and n_sets > 1:
            stream.expand(n_sets)
            rows = patch
        current = stream.resid.shape[0]
        q_slot = next(slots)
        for _ in range(3 * heads - 1):
            next(slots)
        k = len(q_slot.writers)
        coeff = None
        if rows is not None:
            coeff = rows[:, q_slot.edge_start : q_slot.edge_start + 3 * heads * k]
            coeff = coeff.view(current, 3, heads, k)
        query_positions = None
        if index == last and _reads_fewer_positions(stream, positions, override, record):
            # Nothing after the last layer's attention mixes positions: its queries, its MLP
            # and the logits are needed only where the metric reads. Keys and values are not.
            kv_in = _receiver_inputs(stream, coeff, 1, 3, heads, k)
            stream = stream.at(positions)
            q_in = _receiver_inputs(stream, coeff, 0, 1, heads, k)[:, 0]
            query_positions, positions = positions, _all_positions(positions)
        else:
            x = _receiver_inputs(stream, coeff, 0, 3, heads, k)
            q_in, kv_in = x[:, 0], x[:, 1:]
        resid_before = stream.resid
        head_out = attention(
            layer, q_in, kv_in, weights.attn_scale, weights.causal, query_positions
        )
        head_out = _apply_override(head_out, stream.count, override)
        mlp_slot = None if graph.attn_only else next(slots)
        if mlp_slot is not None and graph.parallel_attn_mlp:
            mlp_in = _mlp_input(
                resid_before, mlp_slot.edge_start, len(mlp_slot.writers), rows, stream
            )
        stream.add(head_out, layer.b_o)
        if mlp_slot is not None:
            if not graph.parallel_attn_mlp:
                mlp_in = _mlp_input(
                    stream.resid, mlp_slot.edge_start, len(mlp_slot.writers), rows, stream
                )
            mlp_out = _apply_override(mlp(layer, mlp_in).unsqueeze(-2), stream.count, override)
            stream.add(mlp_out)
    if stream.resid.shape[0] != n_sets:
        stream.expand(n_sets)
    logits_slot = next(slots)
    return ForwardOutput(
        logits=_read_logits(weights, stream, positions, patch, logits_slot.edge_start),
        writer_outputs=stream.stacked() if record else None,
    )


def _receiver_inputs(
    stream: _Stream, coeff: torch.Tensor | None, lo: int, hi: int, heads: int, k: int
) -> torch.Tensor:
    """Inputs ``[S, hi - lo, H, N, T, d]`` of a layer's q (0), k (1) or v (2) receivers."""
    base = stream.resid[:, None, None]
    if coeff is None:
        return base.expand(stream.resid.shape[0], hi - lo, heads, *base.shape[3:])
    return stream.shifted(base, coeff[:, lo:hi], k)


def _reads_fewer_positions(
    stream: _Stream, positions: torch.Tensor, override: Override | None, record: bool
) -> bool:
    """Whether the last layer can run at the read positions only: they are fewer than the
    prompt's, no writer output is recorded, and no override replaces a last-layer group."""
    if record or positions.shape[1] >= stream.resid.shape[2]:
        return False
    return override is None or override.start < stream.count


def _all_positions(positions: torch.Tensor) -> torch.Tensor:
    """Every position of a stream already narrowed to ``positions [N, P]``."""
    arange = torch.arange(positions.shape[1], device=positions.device)
    return arange.expand(positions.shape[0], -1)


def _shared_layers(graph: ComputationalGraph, patch: torch.Tensor | None) -> int:
    """How many leading layers have receivers that every patch row treats alike."""
    if patch is None or patch.shape[0] == 1:
        return graph.n_layers
    differs = torch.nonzero((patch != patch[:1]).any(0)).flatten()
    first = int(differs[0]) if differs.numel() else graph.n_edges
    shared = 0
    for end in _layer_ends(graph):
        if end > first:
            break
        shared += 1
    return shared


def _layer_ends(graph: ComputationalGraph) -> list[int]:
    """For each layer, one past the last edge entering its receivers."""
    ends = [0] * graph.n_layers
    for slot in graph.slots:
        if slot.layer is not None:
            ends[slot.layer] = max(ends[slot.layer], slot.edge_stop)
    return ends


def _mlp_input(
    resid: torch.Tensor, edge_start: int, k: int, patch: torch.Tensor | None, stream: _Stream
) -> torch.Tensor:
    if patch is None:
        return resid
    return stream.shifted(resid, patch[:, edge_start : edge_start + k], k)


def _apply_override(outputs: torch.Tensor, start: int, override: Override | None) -> torch.Tensor:
    """Replace a group's outputs when the override names exactly this group."""
    if override is None or override.start != start:
        return outputs
    if override.stop != start + outputs.shape[-2]:
        raise EngineError(
            f"override must cover one whole writer group ({start}:{start + outputs.shape[-2]}), "
            f"got {override.start}:{override.stop}"
        )
    return override.values.unsqueeze(0).expand_as(outputs)


def _read_logits(
    weights: ModelWeights,
    stream: _Stream,
    positions: torch.Tensor,
    patch: torch.Tensor | None,
    edge_start: int,
) -> torch.Tensor:
    """Logits ``[S, N, P, V]`` read at ``positions``; only those positions are unembedded."""
    rows = torch.arange(positions.shape[0], device=positions.device)[:, None]
    resid = stream.resid[:, rows, positions]  # [S, N, P, d]
    if patch is not None:
        coeff = patch[:, edge_start : edge_start + stream.count]
        resid = resid + stream.term_at(coeff, rows, positions)
    return weights.ln_final(resid) @ weights.w_u + weights.b_u
