"""The intervention engine: exact, batched edge (and node) patching on a task.

One engine binds a model, its graph, a task, an ablation and a metric. It prepares, per
batch of examples, the clean run and the ablated writer outputs, then evaluates any number of
patch masks ``[S, n_edges]`` (1 = the edge carries its ablated value) by stacking up to
``set_batch`` of them into one forward pass. On construction it checks that its own
residual-stream forward reproduces the bridge's logits, so a model it cannot decompose
exactly is refused rather than silently mis-scored. Before that, it plans how many examples
a pass holds from the memory budget (``memory.py``), and refuses a run that cannot fit. It
runs on the model's device (CUDA when the model is there).

With a ``PositionMap`` (``positions``) the engine also patches positional edges: a patch
``[S, n_edges * Q]`` flattened edge-major (edge ``e`` at label ``q`` is column ``e * Q + q``,
``ComputationalGraph.positional_index``), where a coefficient applies at the tokens of each
prompt that count towards label ``q``. Those passes run the positional forward
(``positional.py``); an unpositioned ``[S, n_edges]`` patch (each edge at every position)
still runs the fast stream, on either engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from circuitreg.workers.ablation import (
    AblationKind,
    ablated_outputs,
    check_ablation,
    dataset_mean,
)
from circuitreg.workers.engine.forward import Override, embed, run_forward
from circuitreg.workers.engine.memory import MemoryPlan, Widths, Workload, budget_for, plan_batch
from circuitreg.workers.engine.positional import positional_forward
from circuitreg.workers.engine.relevance import RelevanceRules
from circuitreg.workers.engine.weights import EngineError, ModelWeights, read_weights
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.metrics import Metric, MetricFn, resolve_metric
from circuitreg.workers.positions import PositionError, PositionMap
from circuitreg.workers.tasks.base import TaskData

VERIFY_TOLERANCE = 1e-3
# On the CPU a pass is bound by memory traffic, not by the per-pass overhead that stacking
# amortises: once a pass's per-head q/k/v inputs ``[3, H, S, N, T, width]`` outgrow the
# cache, more sets per pass is slower per set. So on the CPU the engine stacks at most this
# many elements of ``d_model``-wide inputs per pass (the fastest size on the LN models) ...
CPU_PASS_ELEMENTS = 2**22
# ... or of ``d_head``-wide ones, where no layer has a norm before its attention and the inputs
# are formed projected (``ResidualStream.projected``): a pass holds far less per set, so
# larger passes pay.
CPU_PROJECTED_PASS_ELEMENTS = 2**23


@dataclass(frozen=True)
class PreparedBatch:
    """One batch of examples with everything an intervention needs."""

    task: TaskData
    embedded: torch.Tensor  # [N, T, d] clean input-node output
    clean_outputs: torch.Tensor  # [N, T, W, d]
    ablated: torch.Tensor  # [N|1, T, W, d]
    clean_logprobs: torch.Tensor  # [N, P, V]
    weight: float  # N / total examples
    labels: torch.Tensor | None = None  # [N, T] each token's position label (positional)

    @property
    def delta(self) -> torch.Tensor:
        """Ablated minus clean writer outputs (what EAP multiplies gradients by)."""
        return self.ablated - self.clean_outputs


class InterventionEngine:
    """Exact batched patching of edge sets on one task."""

    def __init__(
        self,
        model: Any,
        graph: ComputationalGraph,
        task: TaskData,
        ablation: str = "resample",
        metric: str | MetricFn | Metric = "logit_diff",
        batch_size: int = 32,
        set_batch: int = 16,
        verify: bool = True,
        cache_bytes: int = 512 * 2**20,
        workload: Workload = "patching",
        memory_budget: int | None = None,
        positions: PositionMap | None = None,
    ) -> None:
        if (graph.n_layers, graph.n_heads) != (int(model.cfg.n_layers), int(model.cfg.n_heads)):
            raise EngineError(
                f"graph ({graph.describe()}) does not match the model "
                f"({model.cfg.n_layers} layers x {model.cfg.n_heads} heads)"
            )
        if batch_size < 1 or set_batch < 1:
            raise EngineError("batch_size and set_batch must be >= 1")
        self.model = model
        self.graph = graph
        self.weights: ModelWeights = read_weights(model)
        self.task = task.to(self.weights.device)
        self.ablation: AblationKind = check_ablation(ablation)
        self.metric = resolve_metric(metric)
        self.positions = positions
        self._check_positions()
        # planned before any forward, so a run that cannot fit says so before it starts
        widths = Widths.of(self.weights, graph, task.seq_len)
        budget = budget_for(self.weights.device, memory_budget)
        self.plan: MemoryPlan = plan_batch(
            widths, workload, batch_size, budget, set_batch, positional=positions is not None
        )
        self.batch_size = self.plan.batch_size
        self.set_batch = set_batch
        self.n_forward = 0
        self.n_backward = 0
        self._mean: torch.Tensor | None = None
        self._cache: list[PreparedBatch] | None = None
        d_model = int(self.weights.w_e.shape[1])
        size = task.n_examples * task.seq_len * len(graph.writers) * d_model * 4 * 2
        self._use_cache = size <= cache_bytes
        if verify:
            self.verify()

    @property
    def device(self) -> torch.device:
        """Where the engine computes."""
        return self.weights.device

    @property
    def patch_width(self) -> int:
        """Columns of a positional patch (``n_edges * Q``), or ``n_edges`` without a map."""
        q = 1 if self.positions is None else self.positions.size
        return self.graph.n_edges * q

    def _check_positions(self) -> None:
        """Raise ``EngineError`` unless the map fits the graph and every prompt of the task."""
        if self.positions is None:
            return
        q = self.positions.size
        if self.graph.positions is not None and self.graph.positions != q:
            raise EngineError(
                f"the graph has {self.graph.positions} positions but the position map has "
                f"{q} ({self.positions.mode})"
            )
        try:
            self.positions.assign(self.task)
        except PositionError as exc:
            raise EngineError(f"the position map does not fit the task: {exc}") from exc

    def check_patch(self, patch: torch.Tensor) -> bool:
        """Raise ``EngineError`` unless ``patch`` is ``[..., n_edges]`` or, with positions,
        ``[..., n_edges * Q]``; True for a positional patch."""
        e = self.graph.n_edges
        width = patch.shape[-1] if patch.ndim else None
        if width == e:
            return False
        if self.positions is not None and width == self.patch_width:
            return True
        if self.positions is None:
            raise EngineError(
                f"expected a patch ending in {e} edges, got shape {tuple(patch.shape)}; a "
                f"positional patch needs an engine built with positions=PositionMap"
            )
        raise EngineError(
            f"expected a patch ending in {e} edges or {self.patch_width} positional edges "
            f"({e} x {self.positions.size} positions), got shape {tuple(patch.shape)}"
        )

    # -- runs ---------------------------------------------------------------------------

    def writer_outputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unpatched writer outputs ``[N, T, W, d]`` for some prompts."""
        with torch.no_grad():
            all_pos = torch.zeros(tokens.shape[0], 1, dtype=torch.long, device=tokens.device)
            out = run_forward(
                self.weights, self.graph, embed(self.weights, tokens), all_pos, record=True
            )
        self.n_forward += 1
        assert out.writer_outputs is not None
        return out.writer_outputs[0]

    def verify(self) -> float:
        """Compare this engine's forward with the bridge's own on a few prompts.

        Returns the largest absolute logit difference; raises ``EngineError`` if it exceeds
        ``VERIFY_TOLERANCE`` (relative to the logits' scale).
        """
        tokens = self.task.clean[: min(4, self.task.n_examples)]
        positions = torch.arange(tokens.shape[1], device=tokens.device).expand(tokens.shape[0], -1)
        with torch.no_grad():
            ours = run_forward(self.weights, self.graph, embed(self.weights, tokens), positions)
            theirs = self.model(tokens)
        theirs = getattr(theirs, "logits", theirs)
        diff = float((ours.logits[0] - theirs).abs().max())
        scale = max(1.0, float(theirs.abs().max()))
        if not diff <= VERIFY_TOLERANCE * scale:
            raise EngineError(
                f"the engine's residual decomposition differs from the model's forward by "
                f"{diff:.3g} in logits; this architecture is not supported exactly"
            )
        return diff

    def _dataset_mean(self) -> torch.Tensor:
        if self._mean is None:
            batches = (b.clean for b in self.task.batches(self.batch_size))
            self._mean = dataset_mean(self.writer_outputs, batches)
        return self._mean

    def _prepare(self, task: TaskData) -> PreparedBatch:
        """One recorded clean forward (writer outputs and the logits at the read positions)
        and the ablated writer outputs (a corrupted forward under resample)."""
        embedded = embed(self.weights, task.clean)
        with torch.no_grad():
            clean = run_forward(self.weights, self.graph, embedded, task.positions, record=True)
        self.n_forward += 1
        assert clean.writer_outputs is not None
        clean_outputs = clean.writer_outputs[0]
        return PreparedBatch(
            task=task,
            embedded=embedded,
            clean_outputs=clean_outputs,
            ablated=self.ablated_outputs(task, clean_outputs.shape),
            clean_logprobs=torch.log_softmax(clean.logits[0].float(), dim=-1),
            weight=task.n_examples / self.task.n_examples,
            labels=None if self.positions is None else self.positions.assign(task),
        )

    def ablated_outputs(self, task: TaskData, shape: torch.Size) -> torch.Tensor:
        """What a patched edge carries on this batch, ``[N|1, T, W, d]``, for writer
        outputs of ``shape`` ``[N, T, W, d]``: one corrupted forward under resample."""
        mean = self._dataset_mean() if self.ablation == "mean" else None
        zeros = torch.zeros(1, *shape[1:], device=self.device, dtype=self.weights.w_e.dtype)
        return ablated_outputs(self.ablation, self.writer_outputs, task.corrupted, zeros, mean)

    def batches(self) -> Iterator[PreparedBatch]:
        """The prepared example batches (cached when they fit in ``cache_bytes``)."""
        if self._cache is not None:
            yield from self._cache
            return
        prepared = []
        for task in self.task.batches(self.batch_size):
            batch = self._prepare(task)
            if self._use_cache:
                prepared.append(batch)
            yield batch
        if self._use_cache:
            self._cache = prepared

    def run(
        self,
        batch: PreparedBatch,
        patch: torch.Tensor | None = None,
        *,
        fixed_delta: bool = False,
        embedded: torch.Tensor | None = None,
        override: Override | None = None,
        rules: RelevanceRules | None = None,
    ) -> torch.Tensor:
        """Logits at the read positions ``[S, N, P, V]`` for one batch and ``patch`` rows.

        Gradients flow to ``patch`` and ``embedded`` if they require them. ``fixed_delta``
        uses ``batch.delta`` as each writer's fixed perturbation (linear, for attribution)
        instead of exact patching; ``rules`` makes the backward pass propagate LRP relevance
        (RelP; the logits are unchanged). More rows than one pass should hold
        (``sets_per_pass``) run as several passes whose logits are joined, with or without
        gradients: a pass that outgrows the cache is slower than several that fit, with
        gradients too (mask pruning's samples). A positional patch (``check_patch``) runs
        the positional forward, which takes no ``override`` or ``rules``.
        """
        positional = patch is not None and self.check_patch(patch)
        step = self.sets_per_pass(batch.task.n_examples, positional)
        if patch is not None and patch.shape[0] > step:
            run = partial(self.run, batch, fixed_delta=fixed_delta, embedded=embedded)
            parts = [run(rows, override=override, rules=rules) for rows in patch.split(step)]
            return torch.cat(parts)
        self.n_forward += 1
        if positional:
            assert patch is not None and batch.labels is not None and self.positions is not None
            if override is not None or rules is not None:
                raise EngineError("a positional patch takes no override or relevance rules")
            out = positional_forward(
                self.weights,
                self.graph,
                batch.embedded if embedded is None else embedded,
                batch.task.positions,
                patch.to(self.device).view(patch.shape[0], self.graph.n_edges, -1),
                batch.labels,
                ablated=None if fixed_delta else batch.ablated,
                delta=batch.delta if fixed_delta else None,
            )
            return out.logits
        out = run_forward(
            self.weights,
            self.graph,
            batch.embedded if embedded is None else embedded,
            batch.task.positions,
            patch=None if patch is None else patch.to(self.device),
            ablated=None if fixed_delta else batch.ablated,
            delta=batch.delta if fixed_delta else None,
            override=override,
            rules=rules,
        )
        return out.logits

    def metric_of(self, batch: PreparedBatch, logits: torch.Tensor) -> torch.Tensor:
        """Metric ``[S]`` over one batch, weighted by its share of all examples."""
        return self.metric(logits, batch.task, batch.clean_logprobs) * batch.weight

    # -- evaluation ---------------------------------------------------------------------

    def sets_per_pass(self, n_examples: int, positional: bool = False) -> int:
        """Sets stacked per forward pass over ``n_examples`` prompts: ``set_batch``, or fewer
        where the memory plan allows fewer, or on the CPU where a larger pass would outgrow
        the cache (``CPU_PASS_ELEMENTS``). ``positional``: passes of positional patches,
        whose readers are always formed ``d_model``-wide."""
        if self.device.type != "cpu":
            return self.plan.sets_within(n_examples, self.set_batch)
        layers = self.weights.layers
        if not positional and all(layer.linear_qkv_input for layer in layers):
            width, budget = int(layers[0].w_q.shape[-1]), CPU_PROJECTED_PASS_ELEMENTS
        else:
            width, budget = int(self.weights.w_e.shape[1]), CPU_PASS_ELEMENTS
        per_set = n_examples * self.task.seq_len * 3 * self.graph.n_heads * width
        return self.plan.sets_within(n_examples, max(1, min(self.set_batch, budget // per_set)))

    @property
    def max_sets_per_pass(self) -> int:
        """``sets_per_pass`` for the largest example batch (what one pass can hold)."""
        return self.sets_per_pass(min(self.batch_size, self.task.n_examples))

    @property
    def max_positional_sets_per_pass(self) -> int:
        """``max_sets_per_pass`` for positional patches."""
        return self.sets_per_pass(min(self.batch_size, self.task.n_examples), positional=True)

    def evaluate(self, patch: torch.Tensor) -> torch.Tensor:
        """Metric ``[S]`` over the whole task for each patch row (1 = patched), no gradients:
        rows of ``n_edges`` or, with positions, ``n_edges * Q`` (``check_patch``)."""
        patch = torch.as_tensor(patch)
        if patch.ndim == 1:
            patch = patch.unsqueeze(0)
        positional = self.check_patch(patch)
        values = torch.zeros(patch.shape[0], dtype=torch.float64)
        with torch.no_grad():
            for batch in self.batches():
                step = self.sets_per_pass(batch.task.n_examples, positional)
                for start in range(0, patch.shape[0], step):
                    rows = patch[start : start + step].to(self.device)
                    logits = self.run(batch, rows.float())
                    values[start : start + rows.shape[0]] += (
                        self.metric_of(batch, logits).double().cpu()
                    )
        return values

    def evaluate_circuits(self, keep: torch.Tensor) -> torch.Tensor:
        """Metric ``[S]`` when only the kept edges (True) carry clean values (positional
        edges where ``keep`` is ``[S, n_edges * Q]``)."""
        return self.evaluate(1.0 - torch.as_tensor(keep).float())

    def evaluate_per_example(self, patch: torch.Tensor) -> torch.Tensor:
        """Metric ``[S, N]`` of each patch row on each example (for spreads over prompts)."""
        patch = torch.as_tensor(patch)
        if patch.ndim == 1:
            patch = patch.unsqueeze(0)
        self.check_patch(patch)
        columns = []
        with torch.no_grad():
            for batch in self.batches():
                rows = patch.to(self.device).float()
                logits = self.run(batch, rows)
                per = self.metric.per_example(logits, batch.task, batch.clean_logprobs)
                columns.append(per.double().cpu())
        return torch.cat(columns, dim=-1)

    def evaluate_nodes(self, node_patch: torch.Tensor) -> torch.Tensor:
        """Metric ``[S]`` when the True nodes ``[S, n_nodes]`` are patched (all their outputs)."""
        return self.evaluate(self.graph.node_mask_to_edge_mask(torch.as_tensor(node_patch)))

    def clean_metric(self) -> float:
        """The metric with nothing patched."""
        return float(self.evaluate(torch.zeros(1, self.graph.n_edges))[0])

    def ablated_metric(self) -> float:
        """The metric with every edge patched (the fully corrupted or ablated model)."""
        return float(self.evaluate(torch.ones(1, self.graph.n_edges))[0])
