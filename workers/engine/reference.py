"""The engine's forward pass written plainly: exact per-edge patching, no optimisation.

Edge patching as ACDC (Conmy et al. 2023) and EAP (Syed et al. 2023) define it, and what
``run_forward`` must compute (the tests hold the two together). Every node writes its output
to the residual stream; a reader ``r`` (a head's q, k or v input, an MLP's input, the
logits) receives the outputs of the writers ``w`` before it, plus ``b`` the attention output
biases of the layers whose heads it reads (they belong to no node, as in EAP-IG). An
intervention set ``s`` is a row of ``patch`` ``[S, E]``, one coefficient per edge
``e(w, r)``:

    x_r = b + sum_w out_w + sum_w patch[s, e(w, r)] * (ablated_w - out_w)    (exact)
    x_r = b + sum_w out_w + sum_w patch[s, e(w, r)] * delta_w                (fixed delta)

``out_w`` is ``w``'s output in this same patched run, so a patched edge reaches every later
reader through the writers it changes; ``ablated_w`` is its output on the ablated run. A 1
carries the ablated value along exactly that edge, a 0 the clean one, fractions
interpolate; with a fixed delta the gradient at ``patch = 0`` is the EAP score. Each set is
computed on its own, layer by layer, at every position; the blocks' own computations
(``attention``, ``mlp``) are the ones ``run_forward`` uses.
"""

from __future__ import annotations

import torch

from circuitreg.workers.engine.blocks import attention, head_outputs, mlp
from circuitreg.workers.engine.forward import ForwardOutput, Override
from circuitreg.workers.engine.weights import EngineError, ModelWeights
from circuitreg.workers.graph import ComputationalGraph, ReceiverSlot


def reference_forward(
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
    """``run_forward``'s arguments and result, computed as the module docstring says."""
    exact = delta is None
    source = ablated if exact else delta  # what a patched edge brings, [N|1, T, W, d]
    if patch is not None:
        graph.check_edge_vector(patch)
        patch = patch.to(embedded.dtype)
        if source is None:
            raise EngineError("patching needs the ablated writer outputs or a fixed delta")
    n_sets = 1 if patch is None else patch.shape[0]
    outputs: list[torch.Tensor] = []  # each writer's output [S, N, T, d], in graph.writers order
    biases: dict[int, torch.Tensor] = {}  # a layer's b_O, under its first head's writer index

    def write(group: torch.Tensor) -> None:
        """Append a writer group's outputs ``[g, S, N, T, d]``, or the override's values."""
        start = len(outputs)
        if override is not None and override.start == start:
            if override.stop != start + group.shape[0]:
                raise EngineError(f"override must cover one whole writer group, got "
                                  f"{override.start}:{override.stop}")  # fmt: skip
            group = override.values.permute(2, 0, 1, 3).unsqueeze(1).expand_as(group)
        outputs.extend(group.unbind(0))

    def reader_input(slot: ReceiverSlot) -> torch.Tensor:
        """``x_r`` ``[S, N, T, d]`` of the slot's reader, its edges in writer order."""
        writers = list(slot.writers)
        out = torch.stack([outputs[w] for w in writers], dim=-2)  # [S, N, T, k, d]
        x = out.sum(-2)
        for w in writers:
            x = x + biases.get(w, 0.0)
        if patch is not None and source is not None:
            c = patch[:, slot.edge_start : slot.edge_stop][:, None, None, :, None]
            change = (source[..., writers, :] - out) if exact else source[..., writers, :]
            x = x + (c * change).sum(-2)
        return x

    write(embedded.expand(1, n_sets, *embedded.shape))
    for index, layer in enumerate(weights.layers):
        slots = [slot for slot in graph.slots if slot.layer == index]
        heads = [slot for slot in slots if slot.receiver is not None]  # all q, all k, all v
        qkv = torch.stack([reader_input(slot) for slot in heads]).unflatten(0, (3, -1))
        z = attention(layer, qkv[0], qkv[1:], weights.attn_scale, weights.causal)
        mlp_slot = None if graph.attn_only else slots[-1]
        if mlp_slot is not None and graph.parallel_attn_mlp:  # reads the layer's input
            mlp_in = reader_input(mlp_slot)
        biases[len(outputs)] = layer.b_o
        write(head_outputs(z, layer.w_o))
        if mlp_slot is not None:
            if not graph.parallel_attn_mlp:
                mlp_in = reader_input(mlp_slot)
            write(mlp(layer, mlp_in).unsqueeze(0))
    x = reader_input(graph.slots[-1])  # the logits read every writer
    examples = torch.arange(x.shape[1], device=x.device)[:, None]
    logits = weights.ln_final(x[:, examples, positions]) @ weights.w_u + weights.b_u
    return ForwardOutput(logits, torch.stack(outputs, dim=3) if record else None)
