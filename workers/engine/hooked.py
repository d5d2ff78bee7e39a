"""Edge patching through the bridge's own forward and hooks: one forward pass per edge set.

This is the plain way to patch edges, as hook-based implementations such as ACDC's original
one on TransformerLens 2 do it: run the model with hooks that record each writer's output as it is
computed, and rewrite each reader's input to ``its input + sum over its patched edges of
(ablated - current writer output)``. Everything downstream of a patched edge is recomputed by
the model itself, so a set of edges is patched exactly.

It does not share code with the engine's residual decomposition (``forward``): it reads the
activations the bridge's hooks expose (``hook_resid_pre``, ``attn.hook_z``, ``hook_mlp_out``)
and rewrites ``attn.hook_q/k/v`` (recomputed per head from the patched input through the
block's own ``ln1``), ``ln2.hook_in`` and ``ln_final.hook_in``. The q/k/v are recomputed in
the hook because native bridges refuse TransformerLens's split q/k/v input hooks
(``set_use_split_qkv_input`` raises ``NotImplementedError`` for their ``AttentionBridge``).
It is thus two things: an independent implementation the tests check the engine against on
many-edge sets, and the baseline "one hooked forward per edge set" that
``bench/discovery_speed.py`` times the batched engine against. It is not meant for
discovery runs: use ``InterventionEngine``.

With a ``PositionMap`` it patches positional edges too (rows of ``n_edges * Q``, edge-major
as the engine takes them): a reader's input is rewritten only at the tokens of each prompt
that count towards a patched edge's label (the shift is zero elsewhere), which the tests
hold the engine's positional forward (``positional.py``) to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from circuitreg.workers.ablation import ablated_outputs, check_ablation, dataset_mean
from circuitreg.workers.engine.weights import EngineError
from circuitreg.workers.graph import ComputationalGraph, ReceiverSlot
from circuitreg.workers.metrics import Metric, MetricFn, resolve_metric
from circuitreg.workers.positions import PositionMap
from circuitreg.workers.tasks.base import TaskData

Hook = tuple[str, Callable[..., torch.Tensor | None]]


class HookedEdgePatcher:
    """Evaluate edge sets one hooked bridge forward at a time (reference and baseline).

    It answers the engine's evaluation interface (``graph``, ``metric``, ``device``,
    ``evaluate``, ``evaluate_circuits``, ``n_forward``, ``max_sets_per_pass``), so the speed
    bench can run a method such as ACDC on it unchanged.
    """

    max_sets_per_pass = 1  # one bridge forward per set

    def __init__(
        self,
        model: Any,
        graph: ComputationalGraph,
        task: TaskData,
        ablation: str = "resample",
        metric: str | MetricFn | Metric = "logit_diff",
        positions: PositionMap | None = None,
    ) -> None:
        if graph.parallel_attn_mlp:
            raise EngineError("the hooked reference does not handle parallel attention/MLP")
        if (graph.n_layers, graph.n_heads) != (int(model.cfg.n_layers), int(model.cfg.n_heads)):
            raise EngineError(f"graph ({graph.describe()}) does not match the model")
        self.model = model
        self.graph = graph
        self.device = next(model.parameters()).device
        self.task = task.to(self.device)
        self.metric = resolve_metric(metric)
        self.positions = positions
        # each token's label [N, T]; an unpositioned row is one label every token counts to
        self.labels = None if positions is None else positions.assign(self.task)
        self.n_forward = 0
        self.receivers = self._receivers()
        with torch.no_grad():
            self.w_o = model.W_O.detach()
            self.w_qkv = {"q": model.W_Q.detach(), "k": model.W_K.detach(), "v": model.W_V.detach()}
            self.b_qkv = {"q": model.b_Q.detach(), "k": model.b_K.detach(), "v": model.b_V.detach()}
        self.clean_outputs = self.writer_outputs(self.task.clean)
        kind = check_ablation(ablation)
        mean = dataset_mean(self.writer_outputs, [self.task.clean]) if kind == "mean" else None
        self.ablated = ablated_outputs(
            kind, self.writer_outputs, self.task.corrupted, self.clean_outputs, mean
        )
        with torch.no_grad():
            clean_logits = self._read(self._forward(self.task.clean, []))
        self.clean_logprobs = torch.log_softmax(clean_logits.float(), dim=-1)

    # -- runs ---------------------------------------------------------------------------

    def _forward(self, tokens: torch.Tensor, hooks: list[Hook]) -> torch.Tensor:
        self.n_forward += 1
        out = self.model.run_with_hooks(tokens, fwd_hooks=hooks)
        return getattr(out, "logits", out)

    def _read(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits at the task's read positions ``[N, P, V]``."""
        rows = torch.arange(logits.shape[0], device=logits.device)[:, None]
        return logits[rows, self.task.positions]

    def _recording_hooks(self, outputs: list[torch.Tensor | None]) -> list[Hook]:
        """Hooks that store every writer's output, in ``graph.writers`` order, as it is made."""
        graph = self.graph

        def record_input(value: torch.Tensor, hook: Any) -> None:
            outputs[0] = value

        hooks: list[Hook] = [("blocks.0.hook_resid_pre", record_input)]
        for layer in range(graph.n_layers):

            def record_heads(value: torch.Tensor, hook: Any, layer: int = layer) -> None:
                per_head = torch.einsum("nthd,hdm->nthm", value, self.w_o[layer])
                for head in range(graph.n_heads):
                    outputs[graph.writer_index(layer, head)] = per_head[:, :, head]

            hooks.append((f"blocks.{layer}.attn.hook_z", record_heads))
            if not graph.attn_only:

                def record_mlp(value: torch.Tensor, hook: Any, layer: int = layer) -> None:
                    outputs[graph.writer_index(layer)] = value

                hooks.append((f"blocks.{layer}.hook_mlp_out", record_mlp))
        return hooks

    def writer_outputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unpatched writer outputs ``[N, T, W, d]`` read from the bridge's hooks."""
        outputs: list[torch.Tensor | None] = [None] * len(self.graph.writers)
        with torch.no_grad():
            self._forward(tokens, self._recording_hooks(outputs))
        missing = [self.graph.writers[i] for i, t in enumerate(outputs) if t is None]
        if missing:
            raise EngineError(f"the bridge's hooks never produced writers {missing}")
        return torch.stack([t for t in outputs if t is not None], dim=2)

    # -- patching -----------------------------------------------------------------------

    def _receivers(self) -> dict[tuple[int | None, str | None], tuple[tuple[int, ...], Tensor]]:
        """Per reader input group, its writers and the edge indices ``[R, k]`` into a row.

        Groups: a layer's q (or k, v) inputs of all heads (``R = n_heads``, same writers), an
        MLP input and the logits (``R = 1``).
        """
        groups: dict[tuple[int | None, str | None], list[ReceiverSlot]] = {}
        for slot in self.graph.slots:
            if slot.writers != tuple(range(len(slot.writers))):  # sequential blocks only
                raise EngineError(f"{slot.node} does not read a prefix of the writers")
            key = (slot.layer, slot.receiver.value if slot.receiver else None)
            groups.setdefault(key, []).append(slot)
        return {
            key: (
                slots[0].writers,
                torch.tensor([list(range(s.edge_start, s.edge_stop)) for s in slots]),
            )
            for key, slots in groups.items()
        }

    def _shift(
        self,
        writers: tuple[int, ...],
        coefficients: Tensor,
        current: list[Tensor | None],
        diffs: dict[tuple[int, ...], Tensor],
    ) -> Tensor | None:
        """``sum_w c[r, w, label(n, t)] * (ablated_w - current_w)`` as ``[N, T, R, d]`` for
        ``coefficients`` ``[R, k, Q]`` (``Q = 1``: the same at every token), or None when no
        edge of the group is patched. ``diffs`` caches ``ablated - current`` per writer
        tuple within one forward (a layer's q, k and v inputs share their writers)."""
        if not bool(coefficients.any()):
            return None
        diff = diffs.get(writers)
        if diff is None:  # writers are always a prefix 0..k-1 (checked in ``_receivers``)
            now = torch.stack([current[w] for w in writers], dim=2)  # type: ignore[misc]
            diff = diffs[writers] = self.ablated[:, :, : len(writers)] - now
        n, t = diff.shape[:2]
        labels = self.labels if coefficients.shape[-1] > 1 else None
        if labels is None:
            labels = torch.zeros(n, t, dtype=torch.long)
        per_token = coefficients.to(diff)[..., labels.to(diff.device)]  # [R, k, N, T]
        return torch.einsum("rknt,ntkd->ntrd", per_token, diff)

    def _patching_hooks(self, row: Tensor, current: list[Tensor | None]) -> list[Hook]:
        graph, model = self.graph, self.model
        residual: dict[int, Tensor] = {}
        diffs: dict[tuple[int, ...], Tensor] = {}
        hooks = self._recording_hooks(current)
        for layer in range(graph.n_layers):

            def keep_residual(value: Tensor, hook: Any, layer: int = layer) -> None:
                residual[layer] = value

            hooks.append((f"blocks.{layer}.hook_resid_pre", keep_residual))
            for recv in ("q", "k", "v"):
                writers, edges = self.receivers[(layer, recv)]

                def rewrite_head_inputs(
                    value: Tensor,
                    hook: Any,
                    layer: int = layer,
                    recv: str = recv,
                    writers: tuple[int, ...] = writers,
                    edges: Tensor = edges,
                ) -> Tensor:
                    coefficients = row[edges]  # [H, k, Q]
                    shift = self._shift(writers, coefficients, current, diffs)
                    if shift is None:
                        return value
                    # Every head's input through the block's own norm, projected by its own
                    # weights; heads with no patched edge keep the model's value.
                    normed = model.blocks[layer].ln1(residual[layer][:, :, None] + shift)
                    weight, bias = self.w_qkv[recv][layer], self.b_qkv[recv][layer]
                    patched = torch.einsum("nthd,hde->nthe", normed, weight) + bias
                    touched = coefficients.flatten(1).any(-1).to(value.device)[None, None, :, None]
                    return torch.where(touched, patched, value)

                hooks.append((f"blocks.{layer}.attn.hook_{recv}", rewrite_head_inputs))
            if not graph.attn_only:
                writers, edges = self.receivers[(layer, None)]

                def rewrite_mlp_input(
                    value: Tensor,
                    hook: Any,
                    writers: tuple[int, ...] = writers,
                    edges: Tensor = edges,
                ) -> Tensor:
                    shift = self._shift(writers, row[edges], current, diffs)
                    return value if shift is None else value + shift[:, :, 0]

                hooks.append((f"blocks.{layer}.ln2.hook_in", rewrite_mlp_input))
        writers, edges = self.receivers[(None, None)]

        def rewrite_logits_input(value: Tensor, hook: Any) -> Tensor:
            shift = self._shift(writers, row[edges], current, diffs)
            return value if shift is None else value + shift[:, :, 0]

        hooks.append(("ln_final.hook_in", rewrite_logits_input))
        return hooks

    def _rows(self, patch: torch.Tensor) -> torch.Tensor:
        """Patch rows as ``[S, n_edges, Q]`` (``Q = 1`` for unpositioned rows)."""
        e = self.graph.n_edges
        q = 1 if self.positions is None else self.positions.size
        if patch.ndim != 2 or patch.shape[-1] not in (e, e * q):
            raise EngineError(
                f"expected patch rows of {e} edges"
                + ("" if q == 1 else f" or {e * q} positional edges ({e} x {q})")
                + f", got shape {tuple(patch.shape)}"
            )
        return patch.view(patch.shape[0], e, -1)

    def evaluate(self, patch: torch.Tensor) -> torch.Tensor:
        """Metric ``[S]`` for each patch row (1 = the edge carries its ablated value): rows of
        ``n_edges``, or with positions ``n_edges * Q`` positional edges."""
        patch = torch.as_tensor(patch).float()
        if patch.ndim == 1:
            patch = patch.unsqueeze(0)
        rows = self._rows(patch)
        values = torch.zeros(patch.shape[0], dtype=torch.float64)
        with torch.no_grad():
            for s, row in enumerate(rows.cpu()):
                current: list[torch.Tensor | None] = [None] * len(self.graph.writers)
                logits = self._read(
                    self._forward(self.task.clean, self._patching_hooks(row, current))
                )
                values[s] = float(self.metric(logits[None], self.task, self.clean_logprobs)[0])
        return values

    def evaluate_circuits(self, keep: torch.Tensor) -> torch.Tensor:
        """Metric ``[S]`` when only the kept edges (True) carry clean values."""
        return self.evaluate(1.0 - torch.as_tensor(keep).float())
