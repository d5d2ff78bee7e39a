"""Attribution at the unpatched run: every edge's gradient from one forward and one backward.

EAP (and EAP-IG's ``inputs`` variant at each of its points) needs ``d metric / d patch_e`` at
``patch = 0`` only, which is ``delta_w . d metric / d x_r`` for edge ``e = (w, r)``
(``reference.py``). At ``patch = 0`` every reader sees the plain residual stream, so the run
that gives those gradients is the model's own forward: one stream, one norm per block input.
Every head's query, key and value, every MLP input and the logits' input get a zero probe of
their own, so the backward pass keeps the readers apart; a head input's gradient is its
q/k/v gradient times ``W^T``, taken back through the block's norm on a copy of the block
input per head, one layer at a time after the backward. The edge scores are then one matrix
product per layer (readers x positions x d_model against writers x positions x d_model).

Why not the engine's patched forward: that run carries a coefficient per edge through every
reader's input (``[S, 3, H, k]`` mixtures of the writers formed and normed per head), which is
what exact patching needs and what made EAP cost 3x the model's own two forwards and one
backward on GPT-2 small's shape (bench/results/scale.md). This path computes the same numbers
(tests/workers/test_engine_gradients.py holds it to the engine's patch gradient) at the cost
of the model's forward and backward plus, per layer, the heads' input gradients. It is
TransformerLens' ``attribution_patch`` idea (gradients at hook points times activation
differences), on the engine's graph and batched over examples; ``rules`` (RelP) apply here
as in ``run_forward``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace

import torch

from circuitreg.workers.engine.blocks import attend, head_outputs, mlp
from circuitreg.workers.engine.forward import Override
from circuitreg.workers.engine.relevance import RelevanceRules
from circuitreg.workers.engine.weights import EngineError, LayerWeights, ModelWeights
from circuitreg.workers.graph import ComputationalGraph, ReceiverSlot

MetricOfLogits = Callable[[torch.Tensor], torch.Tensor]
"""The (weighted) metric of logits ``[1, N, P, V]`` as a scalar."""


@dataclass(frozen=True)
class ReaderGradients:
    """One unpatched run's writer outputs and each reader input's gradient.

    ``outputs`` ``[W, N, T, d]`` (detached, writer-major in ``graph.writers`` order, so a
    slot's writers are rows of one matrix); ``q[l]`` ``[H, N, T, d]`` and ``kv[l]``
    ``[2, H, N, T, d]`` for layer ``l``'s query, key and value inputs; ``mlp[l]``
    ``[N, T, d]`` (None without MLPs); ``logits`` ``[N, P, d]`` at the read positions.
    """

    outputs: torch.Tensor
    q: list[torch.Tensor]
    kv: list[torch.Tensor]
    mlp: list[torch.Tensor | None]
    logits: torch.Tensor
    positions: torch.Tensor
    value: float

    def add_(self, other: ReaderGradients) -> None:
        """Add ``other``'s gradients into these, in place (the writer outputs stay this
        run's): what an integrated gradient sums before one contraction with the deltas,
        without a third copy of every reader's gradient."""
        for mine, theirs in zip(self.q + self.kv, other.q + other.kv, strict=True):
            mine.add_(theirs)
        for mlp_mine, mlp_theirs in zip(self.mlp, other.mlp, strict=True):
            if mlp_mine is not None and mlp_theirs is not None:
                mlp_mine.add_(mlp_theirs)
        self.logits.add_(other.logits)

    def delta_to(self, ablated: torch.Tensor) -> torch.Tensor:
        """``ablated - outputs`` writer-major ``[W, N, T, d]``, for ablated writer outputs
        ``[N|1, T, W, d]`` as the engine keeps them."""
        return ablated.permute(2, 0, 1, 3) - self.outputs

    def edge_scores(self, graph: ComputationalGraph, delta: torch.Tensor) -> torch.Tensor:
        """``delta_w . grad_r`` summed over examples and positions, per edge ``[n_edges]``
        (float64), for writer changes ``delta`` ``[W, N, T, d]`` (``delta_to``)."""
        rows = delta.reshape(delta.shape[0], -1)  # [W, N*T*d]
        scores = torch.zeros(graph.n_edges, dtype=torch.float64, device=delta.device)
        for slot, grad in self._slot_gradients(graph):
            block = grad.reshape(-1, rows.shape[1]) @ _rows_of(rows, slot.writers).mT  # [R, k]
            stop = slot.edge_start + block.numel()
            scores[slot.edge_start : stop] = block.reshape(-1).double()
        examples = torch.arange(delta.shape[1], device=delta.device)[:, None]
        at_read = delta[:, examples, self.positions].reshape(delta.shape[0], -1)  # [W, N*P*d]
        logits_slot = graph.slots[-1]
        block = _rows_of(at_read, logits_slot.writers) @ self.logits.reshape(-1)
        scores[logits_slot.edge_start : logits_slot.edge_stop] = block.double()
        return scores.cpu()

    def position_scores(
        self, graph: ComputationalGraph, delta: torch.Tensor, one_hot: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``delta_w . grad_r`` summed over examples and ``d`` only, per edge and position
        ``[n_edges, Q]`` (float64): the positional edge ``(w -> r at t)`` is writer ``w``'s
        change at position ``t`` into reader ``r``'s input at ``t`` (``workers/graph.py``).

        Without ``one_hot`` the positions are the token indices (``Q = T``): the writer
        changes are laid out position-major once per batch (``[W, T, N*d]``), so each slot
        is one batched product over positions with no copy of its writers' rows (a per-slot
        ``einsum`` copied them per slot and cost 3x ``edge_scores`` on GPT-2 small's shape;
        this costs about what it does). With it
        (``PositionMap.one_hot`` of this batch, ``[N, T, Q]``) each example's tokens are
        summed into the labels they count towards, so a span's score adds up the tokens of
        that span wherever each prompt has them (``_LabelOrder``).

        The logits are read at ``positions`` ``[N, P]``, not at every position, so a logits
        edge at ``t`` sums, over examples, the read positions ``p`` of each example with
        ``positions[n, p] == t`` (each example by its own read positions) and is 0 at a
        position no example reads. Summed over positions this is ``edge_scores``.
        """
        t = delta.shape[2]
        if one_hot is not None:
            return self._label_scores(graph, delta, one_hot)
        by_position = delta.transpose(1, 2).reshape(delta.shape[0], t, -1)  # [W, T, N*d]
        scores = torch.zeros(graph.n_edges, t, dtype=torch.float64, device=delta.device)
        for slot, grad in self._slot_gradients(graph):
            r = grad.shape[0]
            mine = grad.transpose(1, 2).reshape(r, t, -1).transpose(0, 1)  # [T, R, N*d]
            rows = _rows_of(by_position, slot.writers)  # [k, T, N*d]
            block = torch.bmm(mine, rows.permute(1, 2, 0))  # [T, R, k]
            stop = slot.edge_start + block.shape[1] * block.shape[2]
            scores[slot.edge_start : stop] = block.permute(1, 2, 0).reshape(-1, t).double()
        logits_slot = graph.slots[-1]
        rows = _rows_of(by_position, logits_slot.writers).transpose(0, 1)  # [T, k, N*d]
        dense = self.logits_at_positions(t).transpose(0, 1).reshape(t, -1, 1)  # [T, N*d, 1]
        block = torch.bmm(rows, dense)[:, :, 0]  # [T, k]
        scores[logits_slot.edge_start : logits_slot.edge_stop] = block.mT.double()
        return scores.cpu()

    def _label_scores(
        self, graph: ComputationalGraph, delta: torch.Tensor, one_hot: torch.Tensor
    ) -> torch.Tensor:
        """``position_scores`` at the labels of ``one_hot`` ``[N, T, Q]``."""
        labels = _LabelOrder.of(one_hot, delta.shape[1], delta.shape[2])
        rows = labels.sort(delta)  # [W, N*T, d], tokens grouped by label, sorted once
        q = labels.size
        scores = torch.zeros(graph.n_edges, q, dtype=torch.float64, device=delta.device)
        for slot, grad in self._slot_gradients(graph):
            block = labels.contract(labels.sort(grad), _rows_of(rows, slot.writers))
            stop = slot.edge_start + block.shape[0] * block.shape[1]
            scores[slot.edge_start : stop] = block.reshape(-1, q).double()
        logits_slot = graph.slots[-1]
        dense = labels.sort(self.logits_at_positions(delta.shape[2])[None])
        block = labels.contract(dense, _rows_of(rows, logits_slot.writers))[0]
        scores[logits_slot.edge_start : logits_slot.edge_stop] = block.double()
        return scores.cpu()

    def logits_at_positions(self, n_positions: int) -> torch.Tensor:
        """The logits reader's gradient spread over every position ``[N, T, d]``: each read
        position's gradient at its own index (summed where an example reads one twice), 0
        where it reads nothing."""
        n, _, d = self.logits.shape
        dense = self.logits.new_zeros(n, n_positions, d)
        examples = torch.arange(n, device=self.logits.device)[:, None].expand_as(self.positions)
        return dense.index_put_((examples, self.positions), self.logits, accumulate=True)

    def _slot_gradients(self, graph: ComputationalGraph) -> list[tuple[ReceiverSlot, torch.Tensor]]:
        """Per layer: its first q slot with the layer's ``[3H, N, T, d]`` gradients (the 3H
        slots read the same writers and their edges are contiguous), and its MLP slot."""
        pairs: list[tuple[ReceiverSlot, torch.Tensor]] = []
        firsts = [s for s in graph.slots if s.receiver == "q" and s.head == 0]
        for layer, slot in enumerate(firsts):
            pairs.append((slot, torch.cat((self.q[layer], self.kv[layer].flatten(0, 1)))))
            grad = self.mlp[layer]
            if grad is not None:
                mlp_slot = next(s for s in graph.slots if s.layer == layer and s.receiver is None)
                pairs.append((mlp_slot, grad[None]))
        return pairs


@dataclass(frozen=True)
class _LabelOrder:
    """One batch's tokens grouped by the label they count towards: ``order`` ``[N*T]``
    (flat token numbers, label by label) and each label's range in it.

    Sorting the writer changes once per batch and each reader gradient once makes every
    label's tokens one contiguous block, so a label's score is one matrix product over its
    tokens (all labels together touch every token once, as ``edge_scores``' one product
    does). Gathering a label's tokens per slot instead, or contracting through the
    ``[N, T, Q]`` map itself (a ``Q`` times larger intermediate), cost 2x to 5x more.
    """

    order: torch.Tensor
    bounds: tuple[tuple[int, int], ...]

    @property
    def size(self) -> int:
        """Number of labels (``Q``)."""
        return len(self.bounds)

    @classmethod
    def of(cls, one_hot: torch.Tensor, n: int, t: int) -> _LabelOrder:
        """From a one-hot map ``[N, T, Q]`` (each token counts towards exactly one label)."""
        if one_hot.ndim != 3 or tuple(one_hot.shape[:2]) != (n, t):
            raise ValueError(f"one_hot must be [N={n}, T={t}, Q], got {tuple(one_hot.shape)}")
        if not bool(((one_hot == 0) | (one_hot == 1)).all() and (one_hot.sum(-1) == 1).all()):
            raise ValueError("one_hot must put every token at exactly one label (weight 1)")
        labels = one_hot.argmax(-1).reshape(-1)
        counts = torch.bincount(labels, minlength=one_hot.shape[2]).tolist()
        ends = [sum(counts[: i + 1]) for i in range(len(counts))]
        bounds = tuple((end - count, end) for count, end in zip(counts, ends, strict=True))
        return cls(torch.argsort(labels, stable=True), bounds)

    def sort(self, values: torch.Tensor) -> torch.Tensor:
        """``[X, N, T, d]`` -> ``[X, N*T, d]``, tokens in label order."""
        flat = values.reshape(values.shape[0], -1, values.shape[-1])
        return flat.index_select(1, self.order.to(values.device))

    def contract(self, grad: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``[R, k, Q]``: sorted reader gradients ``[R, N*T, d]`` dotted with sorted writer
        changes ``[k, N*T, d]`` over ``d`` and the tokens of each label."""
        r, k = grad.shape[0], rows.shape[0]
        out = grad.new_zeros(r, k, self.size)
        for label, (start, stop) in enumerate(self.bounds):
            if stop > start:
                mine = grad[:, start:stop].reshape(r, -1)
                out[:, :, label] = mine @ rows[:, start:stop].reshape(k, -1).mT
        return out


def _rows_of(rows: torch.Tensor, writers: tuple[int, ...]) -> torch.Tensor:
    """The rows of ``writers``: a view where they are the first ``k`` (every slot of the
    graphs here), a gathered copy otherwise."""
    if writers == tuple(range(len(writers))):
        return rows[: len(writers)]
    return rows[list(writers)]


def reader_gradients(
    weights: ModelWeights,
    graph: ComputationalGraph,
    embedded: torch.Tensor,
    positions: torch.Tensor,
    metric: MetricOfLogits,
    rules: RelevanceRules | None = None,
    override: Override | None = None,
) -> ReaderGradients:
    """Run the unpatched model from ``embedded`` ``[N, T, d]`` and differentiate ``metric`` of
    its logits at ``positions`` ``[N, P]`` with respect to every reader's input.

    The heads' probes sit on their queries, keys and values (``d_head`` wide), so the forward
    keeps one normed input per block as the model does; each head input's own gradient is
    then ``W^T`` times its q/k/v gradient taken back through the block's norm
    (``_through_norm``), one layer at a time after the backward pass.

    ``override`` fixes one writer group's outputs (the input, a layer's heads or its MLP) to
    given values, as ``run_forward``'s does (EAP-IG's activations variant): the group passes
    no gradient to its own inputs, and ``outputs`` records the fixed values.
    """
    with rules.applied(weights) if rules is not None else nullcontext():
        run = _probed_forward(weights, graph, embedded.detach(), positions, override)
        value = metric(run.logits)
        wanted = [*run.qkv, *(p for p in run.mlp if p is not None), run.logits_probe]
        grads = list(torch.autograd.grad(value, wanted, allow_unused=True, materialize_grads=True))
        layers = len(weights.layers)
        inputs = [
            _through_norm(layer, x, _head_input_gradients(layer, g))
            for layer, x, g in zip(weights.layers, run.inputs, grads[:layers], strict=True)
        ]
    rest = iter(grads[layers:])
    return ReaderGradients(
        outputs=run.outputs,
        q=[g[0] for g in inputs],
        kv=[g[1:] for g in inputs],
        mlp=[None if p is None else next(rest) for p in run.mlp],
        logits=next(rest),
        positions=positions,
        value=float(value.detach()),
    )


def _head_input_gradients(layer: LayerWeights, qkv_grad: torch.Tensor) -> torch.Tensor:
    """``[3, H, N, T, d]``: each head's normed-input gradient from its q/k/v gradient
    ``[3, H, N, T, d_head]`` (the projections are linear: ``g W^T``)."""
    three, h, n, t, e = qkv_grad.shape
    flat = qkv_grad.reshape(three * h, n * t, e)
    w = layer.w_qkv.reshape(three * h, -1, e)  # [3H, d, d_head]
    return torch.bmm(flat, w.mT).view(three, h, n, t, -1)


def _through_norm(layer: LayerWeights, x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Gradients ``[3, H, N, T, d]`` at the normed input taken back through ``ln1`` at the
    block input ``x`` ``[N, T, d]``, each head's separately (a batched vector-Jacobian
    product on copies of ``x``; under RelP's rules, the LN-rule's Jacobian)."""
    if layer.linear_qkv_input:
        return grad
    copies = x.detach().expand(grad.shape[0] * grad.shape[1], *x.shape).clone()
    copies.requires_grad_(True)
    with torch.enable_grad():
        normed = layer.ln1(copies)
        (back,) = torch.autograd.grad(normed, copies, grad.flatten(0, 1))
    return back.view_as(grad)


@dataclass(frozen=True)
class _ProbedRun:
    outputs: torch.Tensor  # [W, N, T, d], detached
    inputs: list[torch.Tensor]  # per layer, the block input [N, T, d], detached
    qkv: list[torch.Tensor]  # per layer, the zero probes [3, H, N, T, d_head] on q, k and v
    mlp: list[torch.Tensor | None]  # [N, T, d] on the MLP inputs
    logits_probe: torch.Tensor  # [N, P, d]
    logits: torch.Tensor  # [1, N, P, V]


def _probed_forward(
    weights: ModelWeights,
    graph: ComputationalGraph,
    x: torch.Tensor,
    positions: torch.Tensor,
    override: Override | None = None,
) -> _ProbedRun:
    """The model's forward with a zero probe on every head's q, k and v and on every other
    reader's input (each its own, so the backward pass keeps the readers apart); writer
    outputs are written into one buffer; ``override`` fixes one writer group's outputs."""
    _check_override(graph, override)
    x = _fixed(x[None], 0, override)[0]
    n, t, d = x.shape
    heads = graph.n_heads
    outputs = x.new_empty(len(graph.writers), n, t, d)
    outputs[0] = x
    run = _ProbedRun(outputs, [], [], [], x.new_zeros(n, positions.shape[1], d), x)
    written = 1
    for layer in weights.layers:
        run.inputs.append(x.detach())
        normed = layer.ln1(x).reshape(n * t, d)
        qkv = torch.einsum("md,khde->khme", normed, layer.w_qkv).view(3, heads, n, t, -1)
        probe = torch.zeros_like(qkv, requires_grad=True)
        qkv = qkv + layer.b_qkv[:, :, None, None] + probe
        q, k, v = qkv[:, :, None]  # [H, 1, N, T, d_head] each: one intervention set
        z = attend(layer, q, k, v, weights.attn_scale, weights.causal)
        mlp_probe = None if graph.attn_only else x.new_zeros(n, t, d, requires_grad=True)
        mlp_in = x if graph.parallel_attn_mlp else None
        head_out = _fixed(head_outputs(z, layer.w_o)[:, 0], written, override)  # [H, N, T, d]
        x = x + head_out.sum(0) + layer.b_o
        outputs[written : written + heads] = head_out.detach()
        written += heads
        if mlp_probe is not None:
            mlp_out = mlp(layer, ((x if mlp_in is None else mlp_in) + mlp_probe)[None])
            mlp_out = _fixed(mlp_out, written, override)[0]
            x = x + mlp_out
            outputs[written] = mlp_out.detach()
            written += 1
        run.qkv.append(probe)
        run.mlp.append(mlp_probe)
    examples = torch.arange(n, device=x.device)[:, None]
    run.logits_probe.requires_grad_(True)
    final = x[examples, positions] + run.logits_probe
    logits = weights.ln_final(final) @ weights.w_u + weights.b_u
    return replace(run, outputs=outputs.detach(), logits=logits[None])


def _check_override(graph: ComputationalGraph, override: Override | None) -> None:
    """Raise unless ``override`` covers exactly one writer group of ``graph``."""
    if override is None:
        return
    groups = [(0, 1)]
    for layer in range(graph.n_layers):
        first = graph.writer_index(layer, 0)
        groups.append((first, first + graph.n_heads))
        if not graph.attn_only:
            groups.append((graph.writer_index(layer), graph.writer_index(layer) + 1))
    if (override.start, override.stop) not in groups:
        raise EngineError(
            f"override must cover one whole writer group (the input, a layer's heads or its "
            f"MLP), got writers {override.start}:{override.stop}"
        )


def _fixed(outputs: torch.Tensor, start: int, override: Override | None) -> torch.Tensor:
    """A writer group's outputs ``[g, N, T, d]`` (first writer ``start``), or the override's
    values ``[N|1, T, g, d]`` where it fixes this group (constants: no gradient)."""
    if override is None or override.start != start:
        return outputs
    values = override.values.detach().to(outputs.dtype).permute(2, 0, 1, 3)
    return values.expand_as(outputs)
