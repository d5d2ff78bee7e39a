"""Verified circuits: any method's ranking, confirmed by exact patching on the batched engine.

The base method (``base_method``: eap, eap_ig, ...) ranks the edges by |score|; ``verify``
then measures candidate circuits exactly with the ``InterventionEngine`` and keeps a circuit
whose faithfulness,

    F(C) = (m(C) - m(no edges)) / (m(model) - m(no edges)),

(the validation module's definition; every candidate is connected: ``graph.prune_dangling``
of its edges, and F is measured on exactly that connected set) reaches ``target``. The metric
``m`` is ``verify_metric`` (default ``kl``, so F = 1 - KL(C) / KL(no edges): how close the
circuit's output distribution is to the model's); the base method scores with ``metric``.

``mode="add"`` (default), two exact stages:

1. *grow*: walk the ranking, adding edges in score order; the candidates are the ranking's
   prefixes (connected), many per pass (they do not depend on one another, so, unlike ACDC's
   speculation, none is ever wasted; consecutive prefixes that prune to the same circuit are
   measured once). It stops at the first prefix whose F reaches ``target``.
2. *trim*: walk that circuit's edges from the lowest-ranked up and remove each one whose
   removal keeps F >= ``target``; an edge is kept only when the circuit without it falls
   below the target. The removals are sequential decisions, batched by speculation as in ACDC
   but with predicted outcomes: one pass measures every single removal from the grown
   circuit (the "star"), which predicts each decision; the next pass measures the chain of
   decisions under those predictions, exact up to the first misprediction, after which the
   rest is re-planned (one more pass per misprediction).

   A pure "keep an edge when adding it raises F" rule was not used: a conjunction (an
   attention head's query and key edges, everywhere in tracr programs) raises F only when
   both are in, so each alone is refused and the head is lost. Growing to the target first
   and then removing what is not needed keeps conjunctions.

``mode="remove"`` runs only the trim stage, from the whole graph (F = 1): it walks every
edge, lowest-ranked first (more passes; no reliance on the ranking's top).

The passes are counted by the engine (its preparation, the clean and no-edge runs, and every
candidate set: a pass holds up to ``set_batch`` sets, fewer on the CPU where the engine caps
a pass's size) and the verified method adds them to the base method's.

Scores of the ``verified`` method, which is what ROC AUC grades: the base method's scores
normalised by their largest |score| (so in [-1, 1]), plus 1 with the same sign (+1 when the
base score is 0) for the edges of the verified circuit. The ranking is therefore: verified
circuit first, by base |score|, then every other edge by base |score|. The F measured at each
decision is in ``extra["trace"]``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import Field

from circuitreg.workers.engine import InterventionEngine
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.base import (
    ConfigError,
    MethodConfig,
    MetricChoice,
    ProgressFn,
    ScoreResult,
)
from circuitreg.workers.methods.composite import MemberRun, member_config, member_overrides, scaled
from circuitreg.workers.methods.registry import register_method
from circuitreg.workers.metrics import metric_name, within_rounding
from circuitreg.workers.tasks.base import TaskData

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

VerifyMode = Literal["add", "remove"]
VERIFY_MODES: tuple[str, ...] = ("add", "remove")


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


class _Verifier:
    def __init__(self, engine: InterventionEngine, scores: torch.Tensor, target: float,
                 depth: int) -> None:  # fmt: skip
        self.engine = engine
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

    def faith(self, value: float) -> float:
        return (value - self.ablated) / (self.clean - self.ablated)

    def measure(self, masks: list[torch.Tensor], with_ends: bool = False) -> list[float]:
        """F of each mask; ``with_ends`` also measures (first) the model and no edges."""
        n = self.graph.n_edges
        rows = ([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)]
                if with_ends else []) + masks  # fmt: skip
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

    # -- stages -------------------------------------------------------------------------

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
            values = self.measure([m for _, m in chunk], with_ends=first)
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
        predicted: dict[int, bool] = {}  # edge -> predicted "stays"
        for start in range(0, len(candidates), self.depth):  # the star: every single removal
            part = candidates[start : start + self.depth]
            trials = [self.graph.prune_dangling(_without(keep, e)) for e in part]
            for e, f in zip(part, self.measure(trials), strict=True):
                predicted[e] = f < self.target
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
                if stays != predicted[e]:
                    break  # later sets assumed the other outcome
            pending = pending[done:]
        return keep, current


def _without(mask: torch.Tensor, edge: int) -> torch.Tensor:
    out = mask.clone()
    out[edge] = False
    return out


def verify(
    engine: InterventionEngine,
    scores: torch.Tensor,
    target: float = 0.9,
    mode: str = "add",
    set_batch: int | None = None,
) -> VerifiedCircuit:
    """The verified circuit of ``scores`` on ``engine``'s model and task (see the module).

    ``set_batch`` caps the candidate circuits per pass (default: the engine's ``set_batch``;
    the engine may hold fewer per pass on the CPU). ``n_forward`` is the engine passes spent
    here, its preparation included when it was not prepared before.
    """
    target = check_target(target)
    if mode not in VERIFY_MODES:
        raise ConfigError(f"verification mode {mode!r} is not add or remove")
    engine.graph.check_edge_vector(scores)
    start = engine.n_forward
    verifier = _Verifier(engine, scores, target, set_batch or engine.set_batch)
    if mode == "add":
        circuit, current, reached = verifier.grow()
    else:
        circuit = engine.graph.prune_dangling(torch.ones(engine.graph.n_edges, dtype=torch.bool))
        current = verifier.measure([circuit], with_ends=True)[0]
        reached = current >= target
    if reached:
        circuit, current = verifier.trim(circuit, current)
    return VerifiedCircuit(
        mask=circuit,
        faithfulness=current,
        target=target,
        reached=reached,
        n_forward=engine.n_forward - start,
        clean_metric=verifier.clean,
        ablated_metric=verifier.ablated,
        trace=tuple(verifier.trace),
    )


def verified_scores(base: torch.Tensor, circuit: torch.Tensor) -> torch.Tensor:
    """Base scores / max |score|, plus 1 (same sign) on the circuit: the circuit ranks first."""
    base = base.detach().double().cpu()
    peak = float(base.abs().max()) if base.numel() else 0.0
    normalised = base / peak if peak > 0 else torch.zeros_like(base)
    sign = torch.where(normalised < 0, -1.0, 1.0).double()
    return (normalised + sign * circuit.double()).float()


class VerifiedConfig(MethodConfig):
    """Options of a verified circuit around a base method."""

    method_name: ClassVar[str] = "verified"

    base_method: str = Field(default="eap_ig", description="the method whose ranking is verified")
    base_params: str = Field(
        default="",
        description="base method options as option=value, comma-separated (e.g. steps=10); "
        "it shares ablation, metric and batch_size unless they are set here",
    )
    target: float = Field(
        default=0.9,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="faithfulness the verified circuit must reach, in (0, 1]",
    )
    mode: VerifyMode = Field(
        default="add",
        description="add: grow the ranking's prefix to the target, then drop unneeded edges; "
        "remove: drop edges from the whole graph while the target holds",
    )
    verify_metric: MetricChoice = Field(
        default="kl",
        description="metric faithfulness is measured with (kl: how far the circuit's outputs "
        "are from the model's; the base method uses metric)",
    )
    set_batch: int = Field(default=64, ge=1, description="candidate circuits per forward pass")

    def check(self) -> None:
        super().check()
        self.base()

    def to_dict(self) -> dict[str, Any]:
        """As for every method, with a callable ``verify_metric`` recorded by name too."""
        return {**super().to_dict(), "verify_metric": metric_name(self.verify_metric)}

    def base(self) -> tuple[Any, MethodConfig]:
        """The base method's registry entry and config."""
        name = self.base_method.strip()
        prefixed = ",".join(
            f"{name}.{item.strip()}" for item in self.base_params.split(",") if item.strip()
        )
        overrides = member_overrides(prefixed, [name])[name]
        return member_config(name, self, overrides, refuse=("verified",))


@register_method(
    VerifiedConfig.method_name,
    config=VerifiedConfig,
    description="Verified: a base method's ranking, confirmed by exact patching to a "
    "faithfulness target",
)
def verified(
    model: TransformerBridge,
    task: TaskData,
    graph: ComputationalGraph,
    config: VerifiedConfig,
    progress: ProgressFn | None = None,
) -> ScoreResult:
    """Run the base method, then ``verify`` its ranking (see the module)."""
    if not isinstance(config, VerifiedConfig):
        raise ConfigError(f"verified needs a VerifiedConfig, not {config!r}")
    started = time.perf_counter()
    info, base_config = config.base()
    base = info.fn(model, task, graph, base_config, scaled(progress, 0.0, 0.5))
    graph.check_edge_vector(base.edge_scores)
    engine = InterventionEngine(
        model,
        graph,
        task,
        config.ablation,
        config.verify_metric,
        config.batch_size,
        config.set_batch,
    )
    result = verify(engine, base.edge_scores, config.target, config.mode, config.set_batch)
    if progress is not None:
        progress(1.0, f"verified {int(result.mask.sum())} edges, F = {result.faithfulness:.3f}")
    warnings = [f"{info.name}: {w}" for w in base.extra.get("warnings", [])]
    if not result.reached:
        warnings.append(
            f"no prefix of {info.name}'s ranking reached faithfulness {config.target}; the "
            f"circuit is the most faithful one, F = {result.faithfulness:.3f}"
        )
    return ScoreResult(
        edge_scores=verified_scores(base.edge_scores, result.mask),
        method=config.method_name,
        params=config.to_dict(),
        n_forward=base.n_forward + result.n_forward,
        n_backward=base.n_backward,
        seconds=time.perf_counter() - started,
        node_scores=None,
        circuit=result.mask,
        extra={
            "base": MemberRun.of(base).to_dict(),
            "faithfulness": result.faithfulness,
            "target": result.target,
            "reached": result.reached,
            "mode": config.mode,
            "verification_passes": result.n_forward,
            "clean_metric": result.clean_metric,
            "ablated_metric": result.ablated_metric,
            "n_kept": int(result.mask.sum()),
            "trace": [step.to_dict(graph) for step in result.trace],
            "warnings": warnings,
        },
    )
