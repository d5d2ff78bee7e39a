"""Positions through the job queue (issue 18): a queued discovery with ``positions`` stores a
positional circuit and its dense positional scores, a method without positions fails the job
naming itself, and sharded positional scores reduce to the unsharded ones."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from circuitreg.services.db.base import make_engine
from circuitreg.services.positional_scores import PROVENANCE_KEY, load_positional
from circuitreg.services.queue import JobQueue, JobSpec
from circuitreg.services.stores.factory import open_store
from circuitreg.settings import get_settings
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.registry import default_registry
from circuitreg.workers.models import load_model
from circuitreg.workers.positions import PositionMap
from circuitreg.workers.runtime import JobExecutor, Worker, WorkerOptions
from circuitreg.workers.runtime.sharding import sharded_result
from circuitreg.workers.tasks.registry import build_task

from .runtime_support import discovery_spec, migrate, tiny_toy_checkpoint

TASK = "induction:seq_len=6,n=12,read=last"


@pytest.fixture
def setup(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> tuple[JobQueue, JobExecutor, Path]:  # fmt: skip
    monkeypatch.setenv("CIRCUITREG_DATABASE_URL", database_url)
    get_settings.cache_clear()
    migrate(database_url)
    queue = JobQueue(make_engine(database_url), retry_base_seconds=0.01)
    executor = JobExecutor(open_store(get_settings()), device="cpu")
    return queue, executor, tiny_toy_checkpoint(tmp_path / "toy")


def _run(queue: JobQueue, executor: JobExecutor, spec: JobSpec) -> dict[str, object]:
    job = queue.enqueue(spec, max_attempts=1)
    Worker(queue, executor, WorkerOptions(worker_id="w", once=True, poll_seconds=0.01)).run()
    done = queue.get(job.id)
    assert done is not None
    return {"status": done.status, "error": done.error, "result": done.result}


def test_a_positional_job_stores_its_dense_positional_scores(
    setup: tuple[JobQueue, JobExecutor, Path],
) -> None:
    queue, executor, checkpoint = setup
    spec = discovery_spec(str(checkpoint), positions="spans").model_copy(update={"task": TASK})
    done = _run(queue, executor, spec)
    assert done["status"] == "succeeded", done["error"]
    result = done["result"]
    assert isinstance(result, dict)
    stored = executor.store.get_circuit(str(result["circuit_id"]))
    assert stored is not None and stored.positions is not None
    assert stored.positions.labels == ("A-first", "B-first", "A-second", "other")
    assert stored.provenance.extra[PROVENANCE_KEY]["uri"] == result["positional_scores"]
    assert len([e for e in stored.edges if e.positional]) == 12  # the job's top_k 12
    scores = load_positional(executor.store, executor.artifacts, str(result["circuit_id"]))
    assert scores is not None and scores.labels == stored.positions.labels
    summed = {e.name: e.score for e in stored.edges if not e.positional}
    totals = scores.summed()
    assert all(abs(totals[n] - v) <= 1e-5 + 1e-4 * abs(v) for n, v in summed.items() if v)


def test_a_job_asking_positions_of_a_method_without_them_fails_naming_it(
    setup: tuple[JobQueue, JobExecutor, Path],
) -> None:
    queue, executor, checkpoint = setup
    spec = JobSpec(kind="discovery", model=str(checkpoint), task=TASK, method="cd_t",
                   params={"positions": "spans"})  # fmt: skip
    done = _run(queue, executor, spec)
    assert done["status"] == "failed"
    assert "method 'cd_t' does not score positions; methods that do: " in str(done["error"])


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, object_store_memory=150 * 1024 * 1024, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("mode", ["spans", "index"])
def test_sharded_positional_scores_equal_the_unsharded_ones(
    local_ray: None, tmp_path: Path, mode: str
) -> None:
    checkpoint = str(tiny_toy_checkpoint(tmp_path / "toy"))
    loaded = load_model(checkpoint, "cpu")
    graph = ComputationalGraph.from_model(loaded.bridge)
    task = build_task(TASK, loaded)
    entry = default_registry().get("eap")
    config = entry.config({"positions": mode})
    positions = PositionMap.for_task(task, mode)
    sharded = sharded_result(checkpoint, TASK, "eap", config, graph, 12, 3, "cpu",
                             positions=positions)  # fmt: skip
    whole = entry.fn(loaded.bridge, task, graph, config)
    assert sharded.positions == whole.positions == positions
    assert sharded.position_scores is not None and whole.position_scores is not None
    assert whole.position_scores.abs().max() > 1e-3  # not a comparison of zeros
    assert torch.allclose(sharded.position_scores, whole.position_scores, atol=1e-6, rtol=0)


def test_a_sharded_positional_job_stores_the_unsharded_scores(
    local_ray: None, setup: tuple[JobQueue, JobExecutor, Path]
) -> None:
    queue, executor, checkpoint = setup
    stored = []
    for shards in (None, 2):
        params: dict[str, object] = {"positions": "spans", "shards": shards}
        spec = discovery_spec(str(checkpoint), **{k: v for k, v in params.items() if v})
        done = _run(queue, executor, spec.model_copy(update={"task": TASK}))
        assert done["status"] == "succeeded", done["error"]
        result = done["result"]
        assert isinstance(result, dict)
        scores = load_positional(executor.store, executor.artifacts, str(result["circuit_id"]))
        assert scores is not None
        stored.append(scores)
    plain, sharded = stored
    assert plain.labels == sharded.labels and plain.edge_names == sharded.edge_names
    assert np.abs(plain.scores).max() > 1e-3
    assert np.allclose(plain.scores, sharded.scores, atol=1e-6, rtol=0)
