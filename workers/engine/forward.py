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
layer's receivers take one matrix product per earlier writer group. Layers whose receivers
every set patches alike (ACDC's candidates differ only late in the model) are computed once
for all sets, and the stream is widened where the sets first differ. Where a layer has no
norm before its attention (tracr, the toys), its q/k/v projections are linear in the
writers: what every set shares is projected once, and the heads whose outputs differ per set
enter through ``z @ (W_O W_Q)`` with the coefficients folded into that ``d_head``-square
matrix, so no set forms a ``d_model``-wide input per receiver (``ResidualStream.projected``;
on the induction toy those inputs were the largest tensors of a pass). The last layer
runs its queries, its MLP and the logits at the read positions only (nothing after it mixes
positions); its keys and values still see every position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from circuitreg.workers.engine.blocks import attend, attention, head_outputs, mlp
from circuitreg.workers.engine.heads import add_heads, attend_sets, receiver_inputs
from circuitreg.workers.engine.stream import ResidualStream
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
    stream = ResidualStream(first, ablated, delta, track=patch is not None, record=record)
    rows = patch if patch is None else patch[:1]
    slots = iter(graph.slots)
    last = len(weights.layers) - 1
    for index, layer in enumerate(weights.layers):
        widening = index == shared and n_sets > 1
        if widening:
            rows = patch
        current = n_sets if widening else stream.sets
        q_slot = next(slots)
        for _ in range(3 * heads - 1):
            next(slots)
        k = len(q_slot.writers)
        coeff = None
        if rows is not None:
            coeff = rows[:, q_slot.edge_start : q_slot.edge_start + 3 * heads * k]
            coeff = coeff.view(current, 3, heads, k)
        query_positions = None
        narrow = index == last and _reads_fewer_positions(stream, positions, override, record)
        if coeff is not None and layer.linear_qkv_input and n_sets > 1:
            # No norm before the attention: project the stream and the differences, never
            # forming a d_model-wide input per set and receiver (``ResidualStream.projected``).
            # One set takes the general path, which sums as an unpatched run does, so that
            # patching a writer with its own value changes nothing, not even by rounding.
            w_qkv, b_qkv = layer.w_qkv, layer.b_qkv
            if narrow:
                kv = stream.projected(w_qkv[1:], b_qkv[1:], coeff[:, 1:], k)
                if widening:
                    stream.expand(n_sets)
                stream = stream.at(positions)
                q = stream.projected(w_qkv[:1], b_qkv[:1], coeff[:, :1], k)[0]
                query_positions, positions = positions, _all_positions(positions)
                z = attend(
                    layer, q, kv[0], kv[1], weights.attn_scale, weights.causal, query_positions
                )
            else:
                z = attend_sets(stream, layer, weights, coeff, first_difference=widening)
                if widening:
                    stream.expand(n_sets)
        elif widening and not narrow and coeff is not None:
            z = attend_sets(stream, layer, weights, coeff, first_difference=True)
            stream.expand(n_sets)
        else:
            if widening:
                stream.expand(n_sets)
            if narrow:
                # Nothing after the last layer's attention mixes positions: its queries, its
                # MLP and the logits are needed only where the metric reads; keys and values
                # are not.
                kv_in = receiver_inputs(stream, coeff, 1, 3, heads, k)
                stream = stream.at(positions)
                q_in = receiver_inputs(stream, coeff, 0, 1, heads, k)[0]
                query_positions, positions = positions, _all_positions(positions)
            else:
                x = receiver_inputs(stream, coeff, 0, 3, heads, k)
                q_in, kv_in = x[0], x[1:]
            z = attention(layer, q_in, kv_in, weights.attn_scale, weights.causal, query_positions)
        mlp_slot = None if graph.attn_only else next(slots)
        if mlp_slot is not None and graph.parallel_attn_mlp:
            mlp_in = _mlp_input(stream, mlp_slot.edge_start, len(mlp_slot.writers), rows)
        if override is not None and override.start == stream.count:
            stream.add(
                _apply_override(head_outputs(z, layer.w_o), stream.count, override), layer.b_o
            )
        else:
            add_heads(stream, weights, index, z, graph.attn_only)
        if mlp_slot is not None:
            if not graph.parallel_attn_mlp:
                mlp_in = _mlp_input(stream, mlp_slot.edge_start, len(mlp_slot.writers), rows)
            mlp_out = _apply_override(mlp(layer, mlp_in).unsqueeze(0), stream.count, override)
            stream.add(mlp_out)
    if stream.sets != n_sets:
        stream.expand(n_sets)
    logits_slot = next(slots)
    return ForwardOutput(
        logits=_read_logits(weights, stream, positions, patch, logits_slot.edge_start),
        writer_outputs=stream.stacked() if record else None,
    )


def _reads_fewer_positions(
    stream: ResidualStream, positions: torch.Tensor, override: Override | None, record: bool
) -> bool:
    """Whether the last layer can run at the read positions only: they are fewer than the
    prompt's, no writer output is recorded, and no override replaces a last-layer group."""
    if record or positions.shape[1] >= stream.common.shape[2]:
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
    stream: ResidualStream, edge_start: int, k: int, patch: torch.Tensor | None
) -> torch.Tensor:
    """The MLP's input ``[S, N, T, d]`` from the stream as it stands (in a parallel block,
    before the heads of its own layer are added)."""
    if patch is None:
        return stream.resid
    return stream.read(patch[:, edge_start : edge_start + k], k)


def _apply_override(outputs: torch.Tensor, start: int, override: Override | None) -> torch.Tensor:
    """Replace a group's outputs when the override names exactly this group."""
    if override is None or override.start != start:
        return outputs
    if override.stop != start + outputs.shape[0]:
        raise EngineError(
            f"override must cover one whole writer group ({start}:{start + outputs.shape[0]}), "
            f"got {override.start}:{override.stop}"
        )
    # values [N|1, T, g, d] -> the group's [g, S, N, T, d]
    return override.values.permute(2, 0, 1, 3).unsqueeze(1).expand_as(outputs)


def _read_logits(
    weights: ModelWeights,
    stream: ResidualStream,
    positions: torch.Tensor,
    patch: torch.Tensor | None,
    edge_start: int,
) -> torch.Tensor:
    """Logits ``[S, N, P, V]`` read at ``positions``; only those positions are unembedded."""
    if not stream.narrowed:
        stream = stream.at(positions, adds_follow=False)
    if patch is None:
        resid = stream.resid  # [S, N, P, d]
    else:
        resid = stream.read(patch[:, edge_start : edge_start + stream.count], stream.count)
    return weights.ln_final(resid) @ weights.w_u + weights.b_u
