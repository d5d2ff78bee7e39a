"""The verifier behind ``verified`` (``verified.py``): exact stages over a ranking, on the engine.

Kept apart from the method so each stage can say why it is built as it is. Two ways to grow:

- ``scan`` walks the ranking's connected prefixes in order, ``depth`` per pass, and stops at
  the first whose F reaches the target: exact, but on GPT-2 small's 32,491 edges, where a
  random-weight model's target needs a large share of them and a CPU pass holds one or two
  candidates, it takes thousands of passes (``bench/results/scale.md``).
- ``search`` gallops (prefix sizes 1, 2, 4, ...) until F reaches the target, then bisects
  between the last size below it and the first at or above it, ``depth`` sizes per pass:
  about ``2 log2(k)`` passes for a circuit of ``k`` edges. Where F grows with the prefix
  (the usual case, not a guarantee) it finds the same prefix as ``scan``; otherwise it finds
  a prefix that reaches the target whose predecessor does not.

``max_passes`` bounds the verification's engine passes. When it runs out, growth returns the
most faithful prefix measured (``reached`` tells), and trimming stops with the circuit as it
stands: it still has the F measured on it, only some of its edges were not tried
(``trim_complete`` False).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from circuitreg.workers.engine import InterventionEngine
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.base import ConfigError
from circuitreg.workers.metrics import within_rounding

GrowMode = Literal["scan", "search"]
GROW_MODES: tuple[str, ...] = ("scan", "search")


class PassBudgetSpent(Exception):
    """Raised inside a stage when ``max_passes`` would be exceeded by the next pass."""


@dataclass(frozen=True)
class TraceStep:
    """One measured decision: the stage, the edge, F of the circuit tried, and the outcome."""

    stage: str  # "grow" (prefix ending at ``edge``) or "trim" (circuit without ``edge``)
    edge: int
    faithfulness: float
    kept: bool  # grow: the prefix was chosen; trim: the edge stays (its removal fell short)

    def to_dict(self, graph: ComputationalGraph) -> dict[str, Any]:
        return {"stage": self.stage, "edge": graph.edges[self.edge],
                "faithfulness": round(self.faithfulness, 6), "kept": self.kept}  # fmt: skip


@dataclass(frozen=True)
class VerifiedCircuit:
    """A verified circuit: connected kept-edge mask, its exact F, and what verifying cost."""

    mask: torch.Tensor
    faithfulness: float
    target: float
    reached: bool
    trim_complete: bool  # False when the pass budget ran out before every edge was tried
    n_forward: int
    clean_metric: float
    ablated_metric: float
    trace: tuple[TraceStep, ...]


def check_target(target: float) -> float:
    """``target`` as a float; ``ConfigError`` unless it is a number in (0, 1]."""
    try:
        value = float(target)
    except (TypeError, ValueError):
        raise ConfigError(f"faithfulness target must be a number, got {target!r}") from None
    if not math.isfinite(value) or not 0 < value <= 1:
        raise ConfigError(
            f"faithfulness target must be in (0, 1] (the whole model has faithfulness 1), "
            f"got {target!r}"
        )
    return value


class Verifier:
    """The stages of one verification: its ranking, measurements, trace and pass budget."""

    def __init__(self, engine: InterventionEngine, scores: torch.Tensor, target: float,
                 depth: int, max_passes: int | None = None) -> None:  # fmt: skip
        self.engine = engine
        self.start = engine.n_forward
        self.max_passes = max_passes
        self.budget_spent = False
        self.graph = engine.graph
        self.target = target
        self.depth = max(1, min(depth, engine.max_sets_per_pass))
        magnitude = scores.detach().abs().double().cpu()
        if torch.isnan(magnitude).any():
            raise ConfigError("edge scores contain NaN")
        self.order = torch.sort(magnitude, descending=True, stable=True).indices.tolist()
        self.rank = {e: r for r, e in enumerate(self.order)}
        self.trace: list[TraceStep] = []
        self.clean = self.ablated = 0.0
        self.trimmed: tuple[torch.Tensor, float] = (torch.zeros(0, dtype=torch.bool), math.nan)

    def faith(self, value: float) -> float:
        return (value - self.ablated) / (self.clean - self.ablated)

    def measure(self, masks: list[torch.Tensor], with_ends: bool = False) -> list[float]:
        """F of each mask; ``with_ends`` also measures (first) the model and no edges."""
        n = self.graph.n_edges
        rows = ([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)]
                if with_ends else []) + masks  # fmt: skip
        self._charge(len(rows))
        values = self.engine.evaluate_circuits(torch.stack(rows)).tolist()
        if with_ends:
            self.clean, self.ablated = values[0], values[1]
            if within_rounding(self.clean, self.ablated):
                metric = self.engine.metric.name
                raise ConfigError(
                    f"faithfulness is undefined: {metric}(model) = {self.clean:.4g} and "
                    f"{metric}(no edges) = {self.ablated:.4g} are equal up to rounding with "
                    f"ablation={self.engine.ablation!r} (the corruption changes nothing the "
                    "metric reads); use another ablation or metric"
                )
            values = values[2:]
        return [self.faith(v) for v in values]

    @property
    def passes(self) -> int:
        """Engine passes spent since this verification began (its preparation included)."""
        return self.engine.n_forward - self.start

    def _charge(self, n_sets: int) -> None:
        """Refuse (``PassBudgetSpent``) a measurement once the budget is spent: the passes
        are counted by the engine, so the last measurement may overrun it by its own."""
        if n_sets and self.max_passes is not None and self.passes >= self.max_passes:
            self.budget_spent = True
            raise PassBudgetSpent

    def prefix(self, k: int) -> torch.Tensor:
        """The connected circuit of the ranking's first ``k`` edges."""
        mask = torch.zeros(self.graph.n_edges, dtype=torch.bool)
        mask[self.order[:k]] = True
        return self.graph.prune_dangling(mask)

    # -- stages -------------------------------------------------------------------------

    def grow_search(self) -> tuple[torch.Tensor, float, bool]:
        """Gallop then bisect over prefix sizes (the module docstring) to a prefix whose F
        reaches the target while the one before it does not."""
        n = self.graph.n_edges
        measured: dict[int, float] = {}
        best = (-math.inf, torch.zeros(n, dtype=torch.bool))

        def measure_sizes(sizes: list[int], with_ends: bool = False) -> None:
            nonlocal best
            masks = [self.prefix(k) for k in sizes]
            for k, mask, f in zip(sizes, masks, self.measure(masks, with_ends), strict=True):
                measured[k] = f
                self.trace.append(TraceStep("grow", self.order[k - 1], f, f >= self.target))
                if f > best[0]:
                    best = (f, mask)

        lo, hi, size = 0, None, 1  # F(prefix lo) < target <= F(prefix hi)
        try:
            while hi is None:
                room = max(1, self.depth - (2 if not measured else 0))
                sizes = [min(n, size << i) for i in range(room)]
                sizes = sorted(set(sizes))
                measure_sizes(sizes, with_ends=not measured)
                reached = [k for k in sizes if measured[k] >= self.target]
                if reached:
                    hi = reached[0]
                    lo = max([k for k in sizes if k < hi] + [lo])
                elif sizes[-1] == n:
                    return best[1], best[0], False
                else:
                    lo, size = sizes[-1], sizes[-1] * 2
            while hi - lo > 1:
                step = (hi - lo) / (min(self.depth, hi - lo - 1) + 1)
                sizes = sorted({lo + max(1, round(step * (i + 1))) for i in range(self.depth)})
                sizes = [k for k in sizes if lo < k < hi]
                measure_sizes(sizes)
                above = [k for k in sizes if measured[k] >= self.target]
                hi = above[0] if above else hi
                lo = max([k for k in sizes if k < hi] + [lo])
        except PassBudgetSpent:
            if hi is None:
                return best[1], best[0], False
        return self.prefix(hi), measured[hi], True

    def grow(self) -> tuple[torch.Tensor, float, bool]:
        """The first connected prefix of the ranking with F >= target (or the best one)."""
        n = self.graph.n_edges
        prefix = torch.zeros(n, dtype=torch.bool)
        previous = torch.zeros(n, dtype=torch.bool)
        best: tuple[float, torch.Tensor] = (-math.inf, previous)
        first = True
        j = 0
        while j < n:
            chunk: list[tuple[int, torch.Tensor]] = []
            room = self.depth - (2 if first else 0)
            while j < n and len(chunk) < max(1, room):
                prefix[self.order[j]] = True
                pruned = self.graph.prune_dangling(prefix)
                j += 1
                if pruned.any() and not torch.equal(pruned, previous):
                    chunk.append((self.order[j - 1], pruned))
                    previous = pruned
            if not chunk and not first:
                break
            try:
                values = self.measure([m for _, m in chunk], with_ends=first)
            except PassBudgetSpent:
                break
            first = False
            for (edge, mask), f in zip(chunk, values, strict=True):
                reached = f >= self.target
                self.trace.append(TraceStep("grow", edge, f, reached))
                if f > best[0]:
                    best = (f, mask)
                if reached:
                    return mask, f, True
        return best[1], best[0], False

    def trim(self, circuit: torch.Tensor, current: float) -> tuple[torch.Tensor, float]:
        """Remove, lowest-ranked first, every edge whose removal keeps F >= target."""
        candidates = sorted(circuit.nonzero().flatten().tolist(), key=lambda e: -self.rank[e])
        keep = circuit.clone()
        self.trimmed = (keep, current)  # the circuit as it stands if the budget runs out
        try:
            predicted = self._star(keep, candidates)
            return self._decide(keep, current, candidates, predicted)
        except PassBudgetSpent:
            return self.trimmed

    def _star(self, keep: torch.Tensor, candidates: list[int]) -> dict[int, bool]:
        """Predicted "stays" per edge: measured by every single removal from ``keep`` (the
        star) where the budget allows it, else every removal predicted to succeed (the
        lowest-ranked edges are the likeliest to be unneeded)."""
        predicted = dict.fromkeys(candidates, False)
        if self.max_passes is not None:
            per_pass = max(1, self.engine.sets_per_pass(self.engine.task.n_examples))
            star_passes = -(-len(candidates) // min(self.depth, per_pass))
            if self.passes + star_passes > self.max_passes // 2:
                return predicted
        for start in range(0, len(candidates), self.depth):
            part = candidates[start : start + self.depth]
            trials = [self.graph.prune_dangling(_without(keep, e)) for e in part]
            for e, f in zip(part, self.measure(trials), strict=True):
                predicted[e] = f < self.target
        return predicted

    def _decide(self, keep: torch.Tensor, current: float, candidates: list[int],
                predicted: dict[int, bool]) -> tuple[torch.Tensor, float]:  # fmt: skip
        """The removals in order, a chain of them per pass under the predictions, re-planned
        after each misprediction (see ``verified.py``)."""
        pending = list(candidates)
        while pending:
            state = keep.clone()
            plan: list[tuple[int, torch.Tensor | None]] = []
            n_sets = 0
            for e in pending:
                if n_sets == self.depth:
                    break
                if not state[e]:
                    plan.append((e, None))  # pruned away by an earlier removal: nothing to try
                    continue
                trial = self.graph.prune_dangling(_without(state, e))
                plan.append((e, trial))
                n_sets += 1
                if not predicted[e]:
                    state = trial
            masks = [t for _, t in plan if t is not None]
            values = iter(self.measure(masks)) if masks else iter(())
            done = 0
            for e, tried in plan:
                done += 1
                if tried is None:
                    if keep[e]:  # the prediction that pruned it failed: re-plan from here
                        done -= 1
                        break
                    continue
                f = next(values)
                stays = f < self.target
                self.trace.append(TraceStep("trim", e, f, stays))
                if not stays:
                    keep, current = tried, f
                    self.trimmed = (keep, current)
                if stays != predicted[e]:
                    break  # later sets assumed the other outcome
            pending = pending[done:]
        return keep, current


def _without(mask: torch.Tensor, edge: int) -> torch.Tensor:
    out = mask.clone()
    out[edge] = False
    return out
