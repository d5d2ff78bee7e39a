"""Evaluating circuits of positional edges on an engine's prepared batches.

``InterventionEngine`` prepares, per batch of examples, the clean run and the ablated writer
outputs; this evaluates positional patches on them with ``positional_forward``
(``positional.py``), so a method that decides edge by edge (ACDC) can decide positional
edge by positional edge with the same calls: ``evaluate_circuits(keep)`` with ``keep``
``[S, n_edges * Q]``, flattened edge-major (the graph's ``positional_index``: edge ``e`` at
label ``q`` is ``e * Q + q``). Each batch's tokens count towards their labels through the
run's ``PositionMap`` (``assign``), so in ``spans`` mode a patch at ``S2`` patches each
prompt's own S2 tokens.

Sets per pass: the positional forward keeps every set's writer outputs ``[N, T, W, d]``
side by side (four bytes each, and about as much again for the reads), so a pass holds as
many sets as the engine's memory budget allows at that size, at most ``set_batch``.
"""

from __future__ import annotations

import torch

from circuitreg.workers.engine.engine import InterventionEngine
from circuitreg.workers.engine.positional import positional_forward
from circuitreg.workers.engine.weights import EngineError
from circuitreg.workers.positions import PositionMap

BYTES_PER_ELEMENT = 8  # the outputs buffer and the change read from it, float32


class PositionalEvaluator:
    """Exact positional patching of many sets on one engine's task (see the module)."""

    def __init__(self, engine: InterventionEngine, positions: PositionMap) -> None:
        self.engine = engine
        self.positions = positions
        self.graph = engine.graph
        self.n_units = engine.graph.n_edges * positions.size

    @property
    def sets_per_pass(self) -> int:
        """Sets one pass holds within the engine's budget (1 at least)."""
        task, weights = self.engine.task, self.engine.weights
        n = min(self.engine.batch_size, task.n_examples)
        per_set = n * task.seq_len * len(self.graph.writers) * int(weights.w_e.shape[1])
        fits = self.engine.plan.budget // max(1, per_set * BYTES_PER_ELEMENT)
        return max(1, min(self.engine.set_batch, int(fits)))

    def evaluate(self, patch: torch.Tensor) -> torch.Tensor:
        """Metric ``[S]`` over the whole task for each positional patch row ``[S, E * Q]``
        (1 = the edge carries its ablated value at that label's tokens)."""
        patch = torch.as_tensor(patch, dtype=torch.float32)
        if patch.ndim == 1:
            patch = patch.unsqueeze(0)
        if patch.ndim != 2 or patch.shape[1] != self.n_units:
            raise EngineError(
                f"positional patches are [S, {self.n_units}] ({self.graph.n_edges} edges x "
                f"{self.positions.size} positions), got {tuple(patch.shape)}"
            )
        rows = patch.view(patch.shape[0], self.graph.n_edges, self.positions.size)
        values = torch.zeros(patch.shape[0], dtype=torch.float64)
        step = self.sets_per_pass
        with torch.no_grad():
            for batch in self.engine.batches():
                labels = self.positions.assign(batch.task)
                for start in range(0, rows.shape[0], step):
                    part = rows[start : start + step].to(self.engine.device)
                    logits = positional_forward(
                        self.engine.weights, self.graph, batch.embedded, batch.task.positions,
                        part, labels, ablated=batch.ablated,
                    ).logits  # fmt: skip
                    self.engine.n_forward += 1
                    metric = self.engine.metric_of(batch, logits).double().cpu()
                    values[start : start + part.shape[0]] += metric
        return values

    def evaluate_circuits(self, keep: torch.Tensor) -> torch.Tensor:
        """Metric ``[S]`` when only the kept positional edges (True) carry clean values."""
        return self.evaluate(1.0 - torch.as_tensor(keep).float())

    def outgoing(self, node: str) -> torch.Tensor:
        """The positional edges leaving ``node``, at every position."""
        edges = self.graph.outgoing_edges(node)
        q = self.positions.size
        return (edges[:, None] * q + torch.arange(q)).flatten()
