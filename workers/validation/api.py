"""The one entry point the CLI, the worker and the demo call: ``validate``.

``validate`` measures a circuit document on a model and task under one ablation and metric
and returns ``ValidationResult`` objects (faithfulness, fidelity, ablation controls, the
faithfulness curve when the document carries scores, minimality and completeness, and the
suffix-vector ablation check) that attach to the document with ``doc.with_validation(...)``.
Faithfulness, fidelity and the controls share one stacked evaluation; the curve, minimality,
completeness and the suffix check take one (or, for the minimal circuit, two) more.
Stability re-runs discovery and is asked for separately with ``validate_stability``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from circuitreg.schema import CircuitDocument, ValidationResult
from circuitreg.workers.engine import InterventionEngine
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.base import MethodConfig, ScoreResult
from circuitreg.workers.methods.selection import Selection
from circuitreg.workers.metrics import Metric, MetricFn, metric_name
from circuitreg.workers.tasks.base import TaskData

from .base import ValidationConfig, ValidationError, measure_gap
from .circuit import circuit_mask, edge_scores, inner_components
from .completeness import completeness
from .controls import controls_result, measure_controls
from .faithfulness import faithfulness_curve, faithfulness_result, fidelity_result
from .minimality import minimality
from .orientation import helpful_scores
from .stability import stability
from .suffix import suffix_ablation

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

ProgressFn = Callable[[float, str], None]


class EngineEvaluator:
    """Evaluates kept-edge masks with the shared intervention engine.

    ``set_batch`` is the most masks stacked into one forward pass: high enough that a whole
    curve (22 masks) is one pass on small models (on the CPU the engine may split it into a
    few cache-sized passes, ``InterventionEngine.sets_per_pass``). On large models the stacked
    writer outputs (``sets x examples x tokens x writers x d_model``) would not fit, so it is
    lowered to what fits in ``memory_bytes``; the evaluation is then still one call, in a few
    passes.
    """

    def __init__(
        self,
        model: TransformerBridge,
        task: TaskData,
        graph: ComputationalGraph,
        ablation: str = "resample",
        metric: str | MetricFn | Metric = "logit_diff",
        *,
        batch_size: int = 32,
        set_batch: int = 32,
        memory_bytes: int = 2 * 2**30,
    ) -> None:
        d_model = int(model.cfg.d_model)
        per_set = min(batch_size, task.n_examples) * task.seq_len * len(graph.writers) * d_model
        # x4 bytes per float32, x3 for the patched, current and summed copies in flight
        fitting = max(1, memory_bytes // (per_set * 4 * 3))
        self.set_batch = min(set_batch, fitting)
        self.engine = InterventionEngine(
            model, graph, task, ablation, metric, batch_size=batch_size, set_batch=self.set_batch
        )
        self.graph = graph
        self.ablation: str = self.engine.ablation
        self.metric_name = metric_name(metric)
        self.corruption: str | None = task.corruption if ablation == "resample" else None
        self.n_evaluations = 0

    def evaluate(self, masks: torch.Tensor) -> torch.Tensor:
        """Mean metric per kept-edge mask ``[S, n_edges]`` -> ``[S]``."""
        self.n_evaluations += 1
        return self.engine.evaluate_circuits(masks)

    def evaluate_per_example(self, masks: torch.Tensor) -> torch.Tensor:
        """Metric per kept-edge mask and example ``[S, n_edges]`` -> ``[S, N]``."""
        self.n_evaluations += 1
        return self.engine.evaluate_per_example(1.0 - torch.as_tensor(masks).float())


def validate(
    model: TransformerBridge,
    task: TaskData,
    graph: ComputationalGraph,
    doc: CircuitDocument,
    ablation: str = "resample",
    metric: str | MetricFn | Metric = "logit_diff",
    *,
    config: ValidationConfig | None = None,
    batch_size: int = 32,
    set_batch: int = 32,
    progress: ProgressFn | None = None,
) -> tuple[ValidationResult, ...]:
    """Validate ``doc`` on ``model`` and ``task``; attach with ``doc.with_validation(*out)``.

    Raises ``ValidationError`` (naming the problem) for a circuit from another model shape,
    an empty circuit, or a task whose ablation removes none of the behaviour.
    """
    config = config or ValidationConfig()
    report = progress or (lambda fraction, message: None)
    mask = circuit_mask(doc, graph)
    if not bool(mask.any()):
        raise ValidationError(f"circuit {doc.id} has no edges in the circuit")
    scores = edge_scores(doc, graph)
    evaluator = EngineEvaluator(
        model, task, graph, ablation, metric, batch_size=batch_size, set_batch=set_batch
    )
    results: list[ValidationResult] = []

    report(0.0, "faithfulness, fidelity and ablation controls")
    measured = measure_controls(evaluator, mask, config)
    full, empty = measured.anchors.full, measured.anchors.empty
    gap = measure_gap(evaluator)
    results.append(
        faithfulness_result(evaluator, mask, full, empty, measured.circuit_only, config, gap=gap)
    )
    results.append(
        fidelity_result(evaluator, full, empty, measured.circuit_ablated, config, gap=gap)
    )
    results.append(controls_result(evaluator, measured, config))

    if bool((~torch.isnan(scores)).any()):
        report(0.3, "faithfulness curve")
        helpful, orientation = helpful_scores(doc, scores)
        results.append(faithfulness_curve(evaluator, helpful, orientation=orientation))
    if inner_components(graph, mask):  # a circuit of only input->logits has nothing to remove
        report(0.55, "minimality")
        results.append(minimality(evaluator, mask, config))
        report(0.8, "completeness")
        results.append(completeness(evaluator, mask, config))
    report(0.9, "suffix-vector ablation")
    results.append(suffix_ablation(evaluator, mask, config))
    report(1.0, "validated")
    return tuple(_json_safe(r) for r in results)


def validate_document(
    model: TransformerBridge,
    task: TaskData,
    graph: ComputationalGraph,
    doc: CircuitDocument,
    ablation: str = "resample",
    metric: str | MetricFn | Metric = "logit_diff",
    **options: Any,
) -> CircuitDocument:
    """``doc`` with the results of ``validate`` attached (earlier results are kept)."""
    return doc.with_validation(*validate(model, task, graph, doc, ablation, metric, **options))


def validate_stability(
    model: TransformerBridge,
    task: TaskData,
    graph: ComputationalGraph,
    doc: CircuitDocument,
    *,
    n_runs: int = 5,
    resample: bool = True,
    threshold: float = 0.8,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> ValidationResult:
    """Re-run the document's own method (same parameters, ablation, metric and selection)
    ``n_runs`` times and measure how often each of its edges comes back."""
    from circuitreg.workers.methods.registry import RegistryError, default_registry

    try:
        info = default_registry().get(doc.method.name)
    except RegistryError as exc:
        raise ValidationError(f"cannot re-run circuit {doc.id} for stability: {exc}") from None
    params = {**doc.method.params, "ablation": doc.ablation, "metric": doc.metric}
    config = info.config(params)
    reference = circuit_mask(doc, graph)

    def run_method(run_task: TaskData, run_config: MethodConfig) -> ScoreResult:
        return info.fn(model, run_task, graph, run_config)

    return _json_safe(
        stability(
            run_method,
            task,
            graph,
            config,
            _document_selection(doc, int(reference.sum())),
            n_runs=n_runs,
            resample=resample,
            reference=reference,
            threshold=threshold,
            seed=seed,
            progress=progress,
        )
    )


def _document_selection(doc: CircuitDocument, n_edges: int) -> Selection:
    """The selection the document records; top-k of its size when it records a mask."""
    recorded = doc.provenance.extra.get("selection")
    modes = ("threshold", "top_k", "greedy", "optimal")
    if isinstance(recorded, dict) and recorded.get("mode") in modes:
        return Selection(
            recorded["mode"],
            recorded["value"],
            bool(recorded.get("prune_dangling", True)),
            recorded.get("time_limit") if recorded["mode"] == "optimal" else None,
        )
    return Selection("top_k", n_edges)


def _json_safe(result: ValidationResult) -> ValidationResult:
    """Refuse NaN or infinite values: JSON cannot hold them and they mean a broken metric."""
    bad = [key for key, value in _walk(result.values) if not math.isfinite(value)]
    if bad:
        raise ValidationError(f"{result.name}: non-finite values at {', '.join(bad[:5])}")
    return result


def _walk(value: Any, path: str = "") -> list[tuple[str, float]]:
    if isinstance(value, float):
        return [(path or "value", value)]
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in _walk(v, f"{path}.{k}" if path else k)]
    if isinstance(value, list | tuple):
        return [item for i, v in enumerate(value) for item in _walk(v, f"{path}[{i}]")]
    return []
