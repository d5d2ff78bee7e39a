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

import time
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
from circuitreg.workers.methods.verifier import (
    GROW_MODES,
    GrowMode,
    VerifiedCircuit,
    Verifier,
    check_target,
)
from circuitreg.workers.metrics import metric_name
from circuitreg.workers.tasks.base import TaskData

__all__ = ["VerifiedConfig", "check_target", "verified", "verified_scores", "verify"]

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

VerifyMode = Literal["add", "remove"]
VERIFY_MODES: tuple[str, ...] = ("add", "remove")


def verify(
    engine: InterventionEngine,
    scores: torch.Tensor,
    target: float = 0.9,
    mode: str = "add",
    set_batch: int | None = None,
    grow: str = "scan",
    max_passes: int | None = None,
) -> VerifiedCircuit:
    """The verified circuit of ``scores`` on ``engine``'s model and task (see the module).

    ``set_batch`` caps the candidate circuits per pass (default: the engine's ``set_batch``;
    the engine may hold fewer per pass on the CPU). ``grow`` and ``max_passes``: see
    ``verifier.py``. ``n_forward`` is the engine passes spent here, its preparation
    included when it was not prepared before.
    """
    target = check_target(target)
    if mode not in VERIFY_MODES:
        raise ConfigError(f"verification mode {mode!r} is not add or remove")
    if grow not in GROW_MODES:
        raise ConfigError(f"grow mode {grow!r} is not one of {', '.join(GROW_MODES)}")
    if max_passes is not None and max_passes < 3:
        raise ConfigError(f"max_passes must be at least 3 (preparation and ends), got {max_passes}")
    engine.graph.check_edge_vector(scores)
    start = engine.n_forward
    verifier = Verifier(engine, scores, target, set_batch or engine.set_batch, max_passes)
    if mode == "remove":
        circuit = engine.graph.prune_dangling(torch.ones(engine.graph.n_edges, dtype=torch.bool))
        current = verifier.measure([circuit], with_ends=True)[0]
        reached = current >= target
    elif grow == "search":
        circuit, current, reached = verifier.grow_search()
    else:
        circuit, current, reached = verifier.grow()
    if reached:
        circuit, current = verifier.trim(circuit, current)
    return VerifiedCircuit(
        mask=circuit,
        faithfulness=current,
        target=target,
        reached=reached,
        trim_complete=reached and not verifier.budget_spent,
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
    grow: GrowMode = Field(
        default="scan",
        description="scan: the ranking's prefixes in order (exact first prefix); search: "
        "gallop then bisect over prefix sizes, about 2 log2(k) passes (for large graphs)",
    )
    max_passes: int | None = Field(
        default=None,
        ge=3,
        description="bound on verification passes; when spent the circuit is returned as it "
        "stands (extra trim_complete false)",
    )

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
    result = verify(engine, base.edge_scores, config.target, config.mode, config.set_batch,
                    config.grow, config.max_passes)  # fmt: skip
    if progress is not None:
        progress(1.0, f"verified {int(result.mask.sum())} edges, F = {result.faithfulness:.3f}")
    warnings = [f"{info.name}: {w}" for w in base.extra.get("warnings", [])]
    if not result.reached:
        warnings.append(
            f"no prefix of {info.name}'s ranking reached faithfulness {config.target}; the "
            f"circuit is the most faithful one, F = {result.faithfulness:.3f}"
        )
    elif not result.trim_complete:
        warnings.append(
            f"the pass budget ({config.max_passes}) ran out while trimming: the circuit reaches "
            f"F = {result.faithfulness:.3f} but not every edge was tried for removal"
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
            "trim_complete": result.trim_complete,
            "mode": config.mode,
            "verification_passes": result.n_forward,
            "clean_metric": result.clean_metric,
            "ablated_metric": result.ablated_metric,
            "n_kept": int(result.mask.sum()),
            "trace": [step.to_dict(graph) for step in result.trace],
            "warnings": warnings,
        },
    )
