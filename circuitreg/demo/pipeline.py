"""``circuitreg demo``: the whole path, model to GraphQL answer, on the embedded defaults.

It trains (or reuses) the toy induction model, finds which heads TransformerLens'
``head_detector`` calls previous-token and induction heads, discovers the induction circuit at
several training checkpoints with a real discovery method, validates each circuit, stores them
all, and then asks the real API (the FastAPI app, over HTTP in process, with a read token) for
the final circuit, its heads and the K-composition edge between them, and for the checkpoint
at which that edge appeared, and which edges the circuits after the phase change share. Nothing
on this path is written down in advance: if the method does not find the edge, the demo says
so and exits non-zero.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer
from tqdm import tqdm

from circuitreg.settings import Settings

from .query import DemoQuestion, ask_api
from .report import StoredCheckpoint, phase_window, report

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from circuitreg.schema import CircuitDocument, ValidationResult
    from circuitreg.services.artifacts import ArtifactStore
    from circuitreg.services.stores.types import GraphStore
    from circuitreg.workers.graph import ComputationalGraph
    from circuitreg.workers.methods.base import MethodConfig
    from circuitreg.workers.methods.registry import MethodInfo
    from circuitreg.workers.methods.selection import Selection
    from circuitreg.workers.models import LoadedModel
    from circuitreg.workers.tasks.base import TaskData
    from circuitreg.workers.toy.train import ToyRun

DEMO_TASK_EXAMPLES = 48
DEMO_METHOD = "eap_ig"
DEMO_TOP_K = 24
DEMO_CHECKPOINTS = 12
PREV_LABEL = "previous-token head"
INDUCTION_LABEL = "induction head"


def _bar(desc: str, total: float = 1.0) -> tqdm:  # type: ignore[type-arg]
    return tqdm(total=total, desc=desc, bar_format="{l_bar}{bar}| {elapsed}", leave=True)


def _progress(bar: tqdm) -> Any:  # type: ignore[type-arg]
    def update(fraction: float, message: str) -> None:
        # update() redraws at most every mininterval; a refresh per call flooded logs.
        bar.set_postfix_str(message[:40], refresh=False)
        bar.update(round(min(max(fraction, 0.0), 1.0) * bar.total, 3) - bar.n)

    return update


def _scaled(
    progress: Callable[[float, str], None], start: float, span: float
) -> Callable[[float, str], None]:
    """A progress callback for one stage, mapped onto ``[start, start + span]``."""

    def update(fraction: float, message: str) -> None:
        progress(start + span * fraction, message)

    return update


def _pick_checkpoints(steps: list[int], n: int) -> list[int]:
    """``n`` checkpoints spread over training, always including the last."""
    if len(steps) <= n:
        return steps
    picked = {steps[round(i * (len(steps) - 1) / (n - 1))] for i in range(n)}
    return sorted(picked)


def run_demo(
    settings: Settings,
    seed: int = 0,
    d_model: int | None = None,
    n_checkpoints: int = DEMO_CHECKPOINTS,
) -> int:
    """Run the demo on the toy trained with ``seed`` (and ``d_model``); returns the exit status.

    Changing the seed or the width trains a different toy: the heads and the edge the demo
    reports are then found again by head_detector and the method, not remembered.
    """
    from circuitreg import STARTED
    from circuitreg.migrations.relational import upgrade
    from circuitreg.services.artifacts import ArtifactStore
    from circuitreg.services.stores.factory import open_store
    from circuitreg.workers.models import load_model

    typer.echo(f"data directory: {settings.data_dir}")
    typer.echo(f"circuit store: {settings.graph_backend}")
    upgrade(settings.resolved_database_url)
    store = open_store(settings)
    store.migrate()
    artifacts = ArtifactStore(settings.resolved_artifact_url)

    run = _train_toy(seed, d_model)
    final = load_model(str(run.final.path))
    prev_head, ind_head = _role_heads(final, run)
    k_edge = f"{prev_head}->{ind_head}<k>"
    stored, task_name = _discover_checkpoints(run, final, store, artifacts, k_edge, n_checkpoints)

    final_id = stored[-1].circuit_id
    # Role labels attach to the model's components, which exist once a circuit is stored.
    store.label_component(final.ref.name, prev_head, PREV_LABEL)
    store.label_component(final.ref.name, ind_head, INDUCTION_LABEL)
    store.set_alias("toy-induction-final", final_id)
    window = phase_window([(p.step, p.induction_loss) for p in run.loss_curve])
    question = DemoQuestion(
        circuit_id=final_id,
        model=final.ref.name,
        task=task_name,
        method=DEMO_METHOD,
        after_phase_change=[
            s.circuit_id for s in stored if window.end is not None and s.step >= window.end
        ],
        before_phase_change=[
            s.circuit_id for s in stored if window.start is not None and s.step < window.start
        ],
    )
    answer = asyncio.run(ask_api(settings, store, question))
    store.close()
    elapsed = time.perf_counter() - STARTED  # the whole process, imports included
    return report(answer, stored, (prev_head, ind_head), k_edge, window, elapsed)


def _train_toy(seed: int, d_model: int | None) -> ToyRun:
    """The toy induction run of ``seed`` (trained once, then cached), with its phase change."""
    from circuitreg.workers.toy.config import ToyConfig
    from circuitreg.workers.toy.train import ensure_induction_toy

    with _bar("train toy induction model") as bar:
        toy_config = (
            ToyConfig(seed=seed) if d_model is None else ToyConfig(seed=seed, d_model=d_model)
        )
        run = ensure_induction_toy(toy_config, progress=_progress(bar))
        bar.n = bar.total
    typer.echo(
        f"toy model: {len(run.checkpoints)} checkpoints, induction phase change at step "
        f"{run.phase_change_step()} (loss curve: {run.run_dir / 'loss_curve.json'})"
    )
    return run


def _role_heads(final: LoadedModel, run: ToyRun) -> tuple[str, str]:
    """The previous-token and induction heads head_detector finds in the final model."""
    from circuitreg.workers.toy.heads import detect_heads

    heads = detect_heads(final.bridge, seq_len=run.seq_len, bos_token=run.bos_token)
    prev_head, prev_score = heads["previous_token_head"][0]
    ind_head, ind_score = heads["induction_head"][0]
    typer.echo(
        f"head_detector: previous-token head {prev_head} ({prev_score:.2f}), "
        f"induction head {ind_head} ({ind_score:.2f})"
    )
    return prev_head, ind_head


def _discover_checkpoints(
    run: ToyRun,
    final: LoadedModel,
    store: GraphStore,
    artifacts: ArtifactStore,
    k_edge: str,
    n_checkpoints: int,
) -> tuple[list[StoredCheckpoint], str]:
    """Discover, validate and store a circuit at each picked checkpoint; and the task name.

    The last checkpoint gets the full validation; earlier ones faithfulness only, which is
    what the evolution table shows.
    """
    from circuitreg.services.interchange.stored import store_document
    from circuitreg.workers.graph import ComputationalGraph
    from circuitreg.workers.methods.registry import default_registry
    from circuitreg.workers.methods.selection import Selection
    from circuitreg.workers.models import load_model

    method = default_registry().get(DEMO_METHOD)
    config = method.config({})
    selection = Selection(mode="top_k", value=DEMO_TOP_K)
    task = _demo_task(run)
    stored: list[StoredCheckpoint] = []
    for step in _pick_checkpoints([c.step for c in run.checkpoints], max(n_checkpoints, 2)):
        is_final = step == run.final.step
        loaded = final if is_final else load_model(str(run.checkpoint_at(step).path))
        graph = ComputationalGraph.from_model(loaded.bridge)
        with _bar(f"step {step:>4}: {DEMO_METHOD} + validation") as bar:
            doc, results = _discover(loaded, task, graph, method, config, selection, is_final, bar)
            circuit_id = store_document(store, artifacts, doc).circuit_id
        stored.append(_stored_checkpoint(step, circuit_id, doc, results, k_edge))
    return stored, task.name


def _demo_task(run: ToyRun) -> TaskData:
    """The induction task on the toy's own vocabulary and block length, fixed (seed 0) so
    every checkpoint's circuit answers the same prompts."""
    from circuitreg.workers.tasks.induction import induction_task

    return induction_task(
        seq_len=run.seq_len,
        n=DEMO_TASK_EXAMPLES,
        d_vocab=run.d_vocab,
        corrupt="first",
        seed=0,
        bos_token_id=run.bos_token,
    )


def _discover(
    loaded: LoadedModel,
    task: TaskData,
    graph: ComputationalGraph,
    method: MethodInfo,
    config: MethodConfig,
    selection: Selection,
    full_validation: bool,
    bar: tqdm,  # type: ignore[type-arg]
) -> tuple[CircuitDocument, tuple[ValidationResult, ...]]:
    """One checkpoint's circuit with its validation results in it; the method fills 60% of
    ``bar``, the validation (full, or faithfulness only) the rest."""
    from circuitreg.workers.methods.base import to_document
    from circuitreg.workers.validation.api import validate

    progress = _progress(bar)
    result = method.fn(loaded.bridge, task, graph, config, _scaled(progress, 0.0, 0.6))
    doc = to_document(result, graph, selection, loaded.ref, task, device=loaded.device)
    if full_validation:
        results = validate(
            loaded.bridge,
            task,
            graph,
            doc,
            ablation=config.ablation,
            metric=config.metric,
            progress=_scaled(progress, 0.6, 0.4),
        )
    else:
        results = _faithfulness_only(loaded.bridge, task, graph, doc, config)
    bar.n = bar.total
    bar.refresh()
    return doc.with_validation(*results), results


def _stored_checkpoint(
    step: int,
    circuit_id: str,
    doc: CircuitDocument,
    results: tuple[ValidationResult, ...],
    k_edge: str,
) -> StoredCheckpoint:
    """What the report shows of a checkpoint: its faithfulness (with the gap, or why it is
    undefined) and whether its circuit holds the K-composition edge."""
    faith = next((r.values for r in results if r.name == "faithfulness"), {})
    return StoredCheckpoint(
        step,
        circuit_id,
        faith.get("faithfulness"),
        any(e.name == k_edge for e in doc.circuit_edges()),
        gap=faith.get("gap"),
        undefined=faith.get("undefined"),
    )


def _faithfulness_only(
    model: TransformerBridge,
    task: TaskData,
    graph: ComputationalGraph,
    doc: CircuitDocument,
    config: MethodConfig,
) -> tuple[ValidationResult, ...]:
    """Faithfulness alone (one batched evaluation) for the checkpoints before the last."""
    from circuitreg.workers.validation.api import EngineEvaluator
    from circuitreg.workers.validation.base import ValidationConfig, ValidationError
    from circuitreg.workers.validation.circuit import circuit_mask
    from circuitreg.workers.validation.faithfulness import faithfulness

    evaluator = EngineEvaluator(model, task, graph, config.ablation, config.metric)
    try:
        return (faithfulness(evaluator, circuit_mask(doc, graph), ValidationConfig()),)
    except ValidationError as exc:  # an untrained model may not respond to the task at all
        typer.echo(f"  faithfulness undefined at {doc.model.checkpoint}: {exc}")
        return ()
