"""The residual-stream forward pass with per-edge interventions, for many edge sets at once.

What it computes is ``reference_forward`` (``reference.py``: the patching formula, written
plainly); this is the same layer loop, fast. The S intervention sets are stacked in front of
the batch, so one pass evaluates them all, and the writers so far are kept as a
``ResidualStream`` (the sum every set shares, plus the groups that differ per set), so a
layer's receivers take a few matrix products over all of them. Three strategies
(``strategies.py``, each can be turned off with ``Strategies``) save most of the work:
layers every set patches alike are computed once (``SharedPrefix``), the last layer runs at
the read positions only (``last_layer_positions``), and layers with no norm before their
attention form their q/k/v inputs projected (``ProjectedQKV``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from circuitreg.workers.engine.blocks import head_outputs, mlp
from circuitreg.workers.engine.relevance import RelevanceRules
from circuitreg.workers.engine.strategies import (
    SharedPrefix,
    Strategies,
    add_heads,
    attend_layer,
    last_layer_positions,
    qkv_inputs,
)
from circuitreg.workers.engine.stream import ResidualStream
from circuitreg.workers.engine.weights import EngineError, ModelWeights
from circuitreg.workers.graph import ComputationalGraph, ReceiverSlot


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
    strategies: Strategies = Strategies(),
    rules: RelevanceRules | None = None,
) -> ForwardOutput:
    """Run the model with edge interventions: ``reference_forward``'s result, fast.

    ``embedded`` ``[N, T, d]`` is the input node's output; ``positions`` ``[N, P]`` where logits
    are read; ``patch`` ``[S, E]`` (None: one unpatched run); ``ablated`` and ``delta``
    ``[N|1, T, W, d]``. With ``record`` the writer outputs are returned too. With ``rules``
    the values are the same and the backward pass propagates LRP relevance (``relevance``).
    """
    if rules is not None:
        with rules.applied(weights):
            args = (patch, ablated, delta, override, record, strategies)
            return run_forward(weights, graph, embedded, positions, *args)
    if patch is not None:
        graph.check_edge_vector(patch)
        patch = patch.to(embedded.dtype)
    prefix = SharedPrefix(graph, patch, strategies.shared_prefix)
    first = _overridden(embedded[None, None], 0, override)[0]
    stream = ResidualStream(first, ablated, delta, track=patch is not None, record=record)
    last, layers = len(weights.layers) - 1, zip(weights.layers, _layer_slots(graph), strict=True)
    for index, (layer, (q_slot, mlp_slot)) in enumerate(layers):
        rows = prefix.rows(index)  # 1. shared prefix: the first row while the sets agree
        if prefix.widens_at(index):
            stream.expand(prefix.n_sets)
        coeff = _head_coefficients(rows, q_slot, graph.n_heads)  # [S, 3, H, k]
        # 3. projected q/k/v inputs where the layer has no norm before its attention
        inputs = qkv_inputs(layer, weights, coeff, prefix.n_sets, strategies.projected_qkv)
        narrow_to = None  # 2. the last layer at the read positions only
        if index == last and strategies.narrow_last_layer:
            overridden = override is not None and override.start >= stream.count
            narrow_to = last_layer_positions(stream, positions, overridden, record)
        z = prefix.attend_once_per_row(index, stream, inputs, coeff) if narrow_to is None else None
        if z is None:
            z, stream = attend_layer(stream, inputs, coeff, narrow_to)
        if mlp_slot is not None and graph.parallel_attn_mlp:
            mlp_in = _reader_input(stream, mlp_slot, rows)
        if override is not None and override.start == stream.count:
            stream.add(_overridden(head_outputs(z, layer.w_o), stream.count, override), layer.b_o)
        else:
            add_heads(stream, weights, index, z, strategies.projected_qkv)
        if mlp_slot is not None:
            if not graph.parallel_attn_mlp:
                mlp_in = _reader_input(stream, mlp_slot, rows)
            stream.add(_overridden(mlp(layer, mlp_in).unsqueeze(0), stream.count, override))
    if stream.sets != prefix.n_sets:
        stream.expand(prefix.n_sets)
    at_read = stream if stream.narrowed else stream.at(positions, adds_follow=False)
    resid = _reader_input(at_read, graph.slots[-1], patch)  # [S, N, P, d]
    return ForwardOutput(
        logits=weights.ln_final(resid) @ weights.w_u + weights.b_u,
        writer_outputs=stream.stacked() if record else None,
    )


def _layer_slots(graph: ComputationalGraph) -> list[tuple[ReceiverSlot, ReceiverSlot | None]]:
    """Per layer, its first receiver slot (head 0's q; the layer's 3 x H q/k/v slots follow,
    each reading the same writers) and its MLP's slot."""
    by_layer: list[list[ReceiverSlot]] = [[] for _ in range(graph.n_layers)]
    for slot in graph.slots:
        if slot.layer is not None:
            by_layer[slot.layer].append(slot)
    return [(slots[0], None if graph.attn_only else slots[-1]) for slots in by_layer]


def _head_coefficients(
    rows: torch.Tensor | None, q_slot: ReceiverSlot, heads: int
) -> torch.Tensor | None:
    """The coefficients ``[S, 3, H, k]`` of a layer's q/k/v edges, from its first slot."""
    if rows is None:
        return None
    k = len(q_slot.writers)
    return rows[:, q_slot.edge_start : q_slot.edge_start + 3 * heads * k].view(-1, 3, heads, k)


def _reader_input(
    stream: ResidualStream, slot: ReceiverSlot, rows: torch.Tensor | None
) -> torch.Tensor:
    """One reader's input ``[S, N, T, d]`` (an MLP, the logits) from the stream as it stands
    (in a parallel block, before the heads of its own layer are added)."""
    if rows is None:
        return stream.resid
    return stream.read(rows[:, slot.edge_start : slot.edge_stop], len(slot.writers))


def _overridden(outputs: torch.Tensor, start: int, override: Override | None) -> torch.Tensor:
    """A writer group's outputs ``[g, S, N, T, d]``, or the override's values where it names
    exactly this group."""
    if override is None or override.start != start:
        return outputs
    if override.stop != start + outputs.shape[0]:
        raise EngineError(
            f"override must cover one whole writer group ({start}:{start + outputs.shape[0]}), "
            f"got {override.start}:{override.stop}"
        )
    # values [N|1, T, g, d] -> the group's [g, S, N, T, d]
    return override.values.permute(2, 0, 1, 3).unsqueeze(1).expand_as(outputs)
