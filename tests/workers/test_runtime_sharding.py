"""Sharded discovery on a local Ray: the shards reduce to the unsharded scores, a queued job
with ``shards`` stores the same circuit as one without, and a shard whose worker process
dies is retried alone."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from circuitreg.services.db.base import make_engine
from circuitreg.services.queue import JobQueue, JobSpec
from circuitreg.services.stores.factory import open_store
from circuitreg.settings import get_settings
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.registry import default_registry
from circuitreg.workers.models import load_model
from circuitreg.workers.runtime import JobExecutor, Worker, WorkerOptions
from circuitreg.workers.runtime.sharding import (
    ShardingError,
    ShardRequest,
    ShardScores,
    check_shardable,
    score_shard,
    shard_bounds,
    sharded_result,
)
from circuitreg.workers.tasks.registry import build_task

from .runtime_support import migrate, tiny_toy_checkpoint

ray = pytest.importorskip("ray")
TASK = "induction:seq_len=6,n=12"


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray for the module (two CPUs, a small object store)."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the killing shard fn
    ray.init(num_cpus=2, object_store_memory=150 * 1024 * 1024, include_dashboard=False)
    yield
    ray.shutdown()


def test_shard_bounds_cover_every_prompt_once() -> None:
    assert shard_bounds(12, 5) == [(0, 2), (2, 5), (5, 7), (7, 10), (10, 12)]
    assert shard_bounds(3, 1) == [(0, 3)]
    with pytest.raises(ShardingError, match="at most one each"):
        shard_bounds(3, 4)
    with pytest.raises(ShardingError, match="'acdc' cannot be sharded"):
        check_shardable("acdc", "resample")
    with pytest.raises(ShardingError, match="mean ablation"):
        check_shardable("eap", "mean")


def _unsharded(checkpoint: Path, method: str) -> torch.Tensor:
    loaded = load_model(str(checkpoint), "cpu")
    entry = default_registry().get(method)
    task = build_task(TASK, loaded)
    graph = ComputationalGraph.from_model(loaded.bridge)
    return entry.fn(loaded.bridge, task, graph, entry.config_cls()).edge_scores


@pytest.mark.parametrize("method", ["eap", "eap_ig"])
def test_sharded_scores_equal_the_unsharded_ones(
    local_ray: None, tmp_path: Path, method: str
) -> None:
    checkpoint = tiny_toy_checkpoint(tmp_path / "toy")
    loaded = load_model(str(checkpoint), "cpu")
    graph = ComputationalGraph.from_model(loaded.bridge)
    config = default_registry().get(method).config_cls()
    sharded = sharded_result(str(checkpoint), TASK, method, config, graph, 12, 3, "cpu")
    expected = _unsharded(checkpoint, method)
    assert torch.allclose(sharded.edge_scores, expected, atol=1e-6, rtol=0)
    assert expected.abs().max() > 1e-3  # the comparison is not between zeros
    assert [s["prompts"] for s in sharded.extra["shards"]] == [[0, 4], [4, 8], [8, 12]]


SHARD_LOG_DIR = Path("/nonexistent")
"""Set by the test before Ray pickles the function below (by value, with this global)."""


def dies_once_in_shard_two(request: ShardRequest) -> ShardScores:
    """``score_shard``, but the worker running prompts 4-8 kills itself on its first try,
    after loading the model (mid-shard). Every attempt is logged in a file per shard."""
    log = SHARD_LOG_DIR / f"shard-{request.start}.log"
    with log.open("a") as f:
        f.write(f"{os.getpid()}\n")
    if request.start == 4 and len(log.read_text().splitlines()) == 1:
        load_model(request.model, request.device)
        os._exit(1)  # the process dies as a SIGKILLed worker would: no cleanup, no reply
    return score_shard(request)


def test_a_killed_shard_worker_is_retried_alone(local_ray: None, tmp_path: Path) -> None:
    checkpoint = tiny_toy_checkpoint(tmp_path / "toy")
    loaded = load_model(str(checkpoint), "cpu")
    graph = ComputationalGraph.from_model(loaded.bridge)
    config = default_registry().get("eap").config_cls()
    global SHARD_LOG_DIR
    SHARD_LOG_DIR = tmp_path / "log"
    SHARD_LOG_DIR.mkdir()
    result = sharded_result(
        str(checkpoint), TASK, "eap", config, graph, 12, 3, "cpu",
        shard_fn=dies_once_in_shard_two,
    )  # fmt: skip
    attempts = {p.name: p.read_text().split() for p in (tmp_path / "log").iterdir()}
    assert {k: len(v) for k, v in attempts.items()} == {
        "shard-0.log": 1,
        "shard-4.log": 2,
        "shard-8.log": 1,
    }
    assert attempts["shard-4.log"][0] != attempts["shard-4.log"][1]  # a new process
    expected = _unsharded(checkpoint, "eap")
    assert torch.allclose(result.edge_scores, expected, atol=1e-6, rtol=0)


def test_a_queued_job_with_shards_stores_the_unsharded_circuit(
    local_ray: None, tmp_path: Path
) -> None:
    url = get_settings().resolved_database_url
    migrate(url)
    queue = JobQueue(make_engine(url))
    executor = JobExecutor(open_store(get_settings()), device="cpu")
    checkpoint = str(tiny_toy_checkpoint(tmp_path / "toy"))
    circuits = {}
    for shards in (None, 2):
        params: dict[str, object] = {"selection": {"mode": "top_k", "value": 6}}
        if shards:
            params["shards"] = shards
        job = queue.enqueue(
            JobSpec(kind="discovery", model=checkpoint, task=TASK, method="eap_ig", params=params)
        )
        Worker(queue, executor, WorkerOptions(worker_id="w", once=True, poll_seconds=0.01)).run()
        done = queue.get(job.id)
        assert done is not None and done.status == "succeeded", done and done.error
        assert done.result is not None
        stored = executor.store.get_circuit(done.result["circuit_id"])
        assert stored is not None
        circuits[shards] = {e.name: e.score for e in stored.circuit_edges()}
    plain, sharded = circuits[None], circuits[2]
    assert plain.keys() == sharded.keys() and len(plain) == 6
    assert all(abs(plain[k] - sharded[k]) <= 1e-6 for k in plain)
    acdc = JobSpec(
        kind="discovery", model=checkpoint, task=TASK, method="acdc", params={"shards": 2}
    )
    refused = queue.enqueue(acdc, max_attempts=1)
    Worker(queue, executor, WorkerOptions(worker_id="w", once=True, poll_seconds=0.01)).run()
    failed = queue.get(refused.id)
    assert failed is not None and failed.status == "failed"
    assert failed.error is not None and "params.shards: method 'acdc' cannot be sharded" in (
        failed.error
    )
