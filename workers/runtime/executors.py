"""Job executors: the one place that turns a queued ``JobSpec`` into worker code.

A discovery job loads the model (once per worker, through the model cache), builds the task
and the graph, runs the registered method, selects the circuit, builds the interchange
document and writes it through the GraphStore. The circuit id is the document's content
hash, so a job re-run after its worker died writes nothing new. A validation job reads the
stored circuit, measures it, and attaches the results. Progress goes to the job row.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from circuitreg.services.artifacts import ArtifactStore
from circuitreg.services.db.retry import retry_transient
from circuitreg.services.interchange.stored import load_document
from circuitreg.services.positional_scores import store_positional_document
from circuitreg.services.queue import JobRecord, JobSpec
from circuitreg.services.stores.types import GraphStore

if TYPE_CHECKING:
    from circuitreg.workers.graph import ComputationalGraph
    from circuitreg.workers.models import LoadedModel, ModelCache
    from circuitreg.workers.tasks.base import TaskData

ProgressFn = Callable[[float, str], None]

#: Keys of ``JobSpec.params`` that the worker reads itself; the rest configure the method.
WORKER_PARAMS = ("selection", "seed", "shards")


class JobSpecError(ValueError):
    """The job's spec cannot be run as given (unknown kind, bad selection, ...)."""


def scaled(progress: ProgressFn, start: float, stop: float) -> ProgressFn:
    """Map a stage's own 0..1 progress onto ``start..stop`` of the whole job."""

    def report(fraction: float, message: str) -> None:
        progress(start + (stop - start) * min(1.0, max(0.0, fraction)), message)

    return report


class JobExecutor:
    """Runs claimed jobs on one device with one model cache; callable as a ``JobRunner``."""

    def __init__(
        self,
        store: GraphStore,
        *,
        device: str,
        models: ModelCache | None = None,
        artifacts: ArtifactStore | None = None,
        db_retry_seconds: float = 30.0,
    ) -> None:
        self.store = store
        # Store writes are idempotent (content-addressed circuits, keyed validations), so a
        # dropped connection is retried here instead of failing, and re-running, the job.
        self.db_retry_seconds = db_retry_seconds
        self.device = device
        self._models = models
        if artifacts is None:
            from circuitreg.settings import get_settings

            artifacts = ArtifactStore(get_settings().resolved_artifact_url)
        # Dense scores (every edge of the graph) go here; the graph store keeps the circuit.
        self.artifacts = artifacts

    @property
    def models(self) -> ModelCache:
        """The worker's model cache (created on first use: it imports torch)."""
        if self._models is None:
            from circuitreg.workers.models import ModelCache

            self._models = ModelCache(max_models=2)
        return self._models

    def warm_up(self) -> None:
        """Import the heavy modules before the first claim, so a claimed job starts at once."""
        from circuitreg.workers.methods.registry import default_registry as methods
        from circuitreg.workers.tasks.registry import default_registry as tasks

        importlib.import_module("circuitreg.workers.validation")
        methods()
        tasks()

        _ = self.models

    def __call__(self, job: JobRecord, progress: ProgressFn) -> dict[str, Any]:
        runners = {"discovery": self.discover, "validation": self.validate}
        run = runners.get(job.kind)
        if run is None:
            raise JobSpecError(f"job {job.id} has unknown kind {job.kind!r}")
        return run(job, progress)

    # ------------------------------------------------------------------ shared steps

    def _load(
        self, spec: JobSpec, progress: ProgressFn
    ) -> tuple[LoadedModel, TaskData, ComputationalGraph]:
        from circuitreg.workers.graph import ComputationalGraph
        from circuitreg.workers.tasks.registry import build_task

        progress(0.02, f"loading model {spec.model}")
        loaded = self.models.get(spec.model, self.device)
        revision = loaded.ref.revision
        if spec.model_revision and revision and spec.model_revision != revision:
            raise JobSpecError(
                f"model {spec.model!r} has revision {revision}, but the job asks for "
                f"{spec.model_revision}"
            )
        progress(0.08, f"building task {spec.task}")
        task = build_task(spec.task, loaded).to(self.device)  # LoadedModel knows the BOS
        graph = ComputationalGraph.from_model(loaded.bridge)
        return loaded, task, graph

    # ------------------------------------------------------------------ discovery

    def discover(self, job: JobRecord, progress: ProgressFn) -> dict[str, Any]:
        """Run a discovery method and store the circuit; returns its id and size."""
        import torch

        from circuitreg.workers.methods.base import to_document
        from circuitreg.workers.methods.positional_document import positional_scores, prompt_tokens
        from circuitreg.workers.methods.registry import default_registry

        spec = job.spec
        assert spec.method is not None  # JobSpec guarantees it for discovery jobs
        entry = default_registry().get(spec.method)
        params = {k: v for k, v in spec.params.items() if k not in WORKER_PARAMS}
        config = entry.config_cls.from_dict(
            {**params, "ablation": spec.ablation, "metric": spec.metric}
        )
        selection = _selection(spec.params.get("selection"))
        seed = _seed(spec.params.get("seed"))
        if seed is not None:
            torch.manual_seed(seed)
        loaded, task, graph = self._load(spec, progress)
        shards = _shards(spec.params.get("shards"))
        if shards is None:
            result = entry.fn(loaded.bridge, task, graph, config, scaled(progress, 0.1, 0.9))
        else:
            result = self._sharded(spec.model, spec.task, entry.name, config, graph, task, shards)
        progress(0.92, "selecting the circuit")
        doc = to_document(
            result,
            graph,
            selection,
            loaded.ref,
            task,
            seed=seed,
            job_id=job.id,
            device=self.device,
            prompt_tokens=prompt_tokens(loaded.bridge, task),
        )
        positional = None  # a positional run's dense [n_edges, Q] scores, beside the dense ones
        if result.position_scores is not None and result.positions is not None:
            positional = positional_scores(graph, result.positions, result.position_scores)
        progress(0.96, f"storing circuit {doc.id}")
        stored = retry_transient(
            lambda: store_positional_document(
                self.store, self.artifacts, doc, positional, job_id=job.id
            ),
            self.db_retry_seconds,
        )
        return {
            "circuit_id": stored.stored.circuit_id,
            "n_edges": len(doc.circuit_edges()),
            "n_components": len(doc.circuit_components()),
            "warnings": list(result.extra.get("warnings", [])),  # e.g. an unfaithful circuit
            **(
                {"positional_scores": stored.positional_scores.uri}
                if stored.positional_scores is not None
                else {}
            ),
        }

    def _sharded(
        self,
        model: str,
        task_spec: str,
        method: str,
        config: Any,
        graph: ComputationalGraph,
        task: TaskData,
        shards: int,
    ) -> Any:
        """Score on Ray in ``shards`` prompt shards (``sharding``); bad requests are spec errors."""
        from circuitreg.settings import get_settings
        from circuitreg.workers.positions import PositionMap
        from circuitreg.workers.runtime.sharding import ShardingError, sharded_result

        mode = getattr(config, "positions", None)
        try:
            return sharded_result(
                model, task_spec, method, config, graph, task.n_examples, shards, self.device,
                address=get_settings().ray_address,
                positions=PositionMap.for_task(task, mode) if mode else None,
            )  # fmt: skip
        except ShardingError as exc:
            raise JobSpecError(f"params.shards: {exc}") from None

    # ------------------------------------------------------------------ validation

    def validate(self, job: JobRecord, progress: ProgressFn) -> dict[str, Any]:
        """Validate a stored circuit and attach the results; returns their names."""
        from circuitreg.workers.validation import ValidationConfig, validate

        spec = job.spec
        assert spec.circuit_id is not None  # JobSpec guarantees it for validation jobs
        circuit_id = self.store.resolve(spec.circuit_id) or spec.circuit_id
        if self.store.get_summary(circuit_id) is None:
            raise JobSpecError(f"no stored circuit {spec.circuit_id!r} to validate")
        # With its dense scores merged back, so the faithfulness curve ranks every edge.
        doc = load_document(self.store, self.artifacts, circuit_id)
        try:
            config = ValidationConfig(**spec.params)
        except TypeError as exc:
            raise JobSpecError(f"bad validation parameters {spec.params}: {exc}") from exc
        loaded, task, graph = self._load(spec, progress)
        results = validate(
            loaded.bridge,
            task,
            graph,
            doc,
            spec.ablation,
            spec.metric,
            config=config,
            progress=scaled(progress, 0.1, 0.95),
        )
        progress(0.96, f"storing {len(results)} validation result(s)")
        for result in results:
            retry_transient(
                partial(self.store.add_validation, circuit_id, result), self.db_retry_seconds
            )
        return {
            "circuit_id": circuit_id,
            "validation": [
                {"name": r.name, "passed": r.passed, "ablation": r.ablation} for r in results
            ],
        }


def _selection(raw: Any) -> Any:
    from circuitreg.workers.methods.selection import Selection

    if raw is None:
        return None  # the method's own circuit, or its top edges (``default_selection``)
    if not isinstance(raw, dict):
        raise JobSpecError(f"params.selection must be an object, got {raw!r}")
    unknown = sorted(set(raw) - {"mode", "value", "prune_dangling", "time_limit"})
    if unknown:
        raise JobSpecError(f"params.selection has unknown key(s) {', '.join(unknown)}")
    return Selection(**raw)


def _shards(raw: Any) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise JobSpecError(f"params.shards must be a positive integer, got {raw!r}")
    return raw


def _seed(raw: Any) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise JobSpecError(f"params.seed must be an integer, got {raw!r}")
    return raw
