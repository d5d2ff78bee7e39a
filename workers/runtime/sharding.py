"""Big discovery jobs split over prompts and run on Ray; the shards reduce exactly.

EAP and EAP-IG scores are means over prompt pairs of per-pair gradients, so scoring each
contiguous shard of the prompts on its own and weighting shard ``s`` by ``n_s / N`` gives the
unsharded scores (to float rounding). The registry's queue stays the record of jobs; Ray
only executes the shards: a local ``ray.init`` when no address is configured, a cluster's
address in production (``CIRCUITREG_RAY_ADDRESS``), one GPU per shard where the device is
CUDA. A shard whose worker process dies is retried by Ray (``max_retries``); the others are
not rerun.

A positional run (``positions=index|spans``) reduces the same way: each shard's
``[n_edges, Q]`` scores are means over its prompts at the same position labels (the labels
come from the task, not the prompts: token indices, or span names plus ``other``), and the
result carries the whole task's ``PositionMap``.

Methods whose scores are not sums over prompts (ACDC's sequential decisions, mask pruning's
optimisation), and mean ablation (its means are taken over all prompts), are refused by
name rather than sharded approximately.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from circuitreg.workers.graph import ComputationalGraph
    from circuitreg.workers.methods.base import MethodConfig, ScoreResult
    from circuitreg.workers.positions import PositionMap

SHARDABLE_METHODS = ("eap", "eap_ig")
SHARD_RETRIES = 3
"""Ray reruns a shard whose worker process died this many times before the job fails."""


class ShardingError(ValueError):
    """A job that cannot be sharded exactly as asked (the message says why)."""


@dataclass(frozen=True)
class ShardRequest:
    """Everything a Ray worker needs to score one shard: specs, not objects, so it can load
    the model and rebuild the task itself (the task is seeded, so every shard sees the same
    prompts)."""

    model: str
    task: str
    method: str
    params: Mapping[str, Any]
    start: int
    stop: int
    device: str


@dataclass(frozen=True)
class ShardScores:
    """One shard's edge scores (float64), how many prompt pairs it covered and its cost."""

    edge_scores: np.ndarray
    n_examples: int
    n_forward: int
    n_backward: int
    seconds: float
    pid: int
    position_scores: np.ndarray | None = None


def shard_bounds(n_examples: int, n_shards: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` ranges of nearly equal size covering every prompt."""
    if n_shards < 1:
        raise ShardingError(f"shards must be >= 1, got {n_shards}")
    if n_shards > n_examples:
        raise ShardingError(f"{n_shards} shards for {n_examples} prompt pairs: at most one each")
    edges = np.linspace(0, n_examples, n_shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges.tolist())]


def check_shardable(method: str, ablation: str) -> None:
    """Refuse a method or ablation whose sharded scores would not equal the unsharded ones."""
    if method not in SHARDABLE_METHODS:
        raise ShardingError(
            f"method {method!r} cannot be sharded over prompts (its scores are not a sum over "
            f"them); shardable: {', '.join(SHARDABLE_METHODS)}"
        )
    if ablation == "mean":
        raise ShardingError("mean ablation averages over all prompts, so shards would differ")


_MODELS: dict[tuple[str, str], Any] = {}
"""Models loaded by this (Ray worker) process, reused by its later shards."""


def score_shard(request: ShardRequest) -> ShardScores:
    """Load the model (once per process), rebuild the task, score the shard's prompts."""
    from circuitreg.workers.graph import ComputationalGraph
    from circuitreg.workers.methods.registry import default_registry
    from circuitreg.workers.models import load_model
    from circuitreg.workers.tasks.registry import build_task

    key = (request.model, request.device)
    if key not in _MODELS:
        _MODELS[key] = load_model(request.model, request.device)
    loaded = _MODELS[key]
    task = build_task(request.task, loaded).subset(slice(request.start, request.stop))
    graph = ComputationalGraph.from_model(loaded.bridge)
    entry = default_registry().get(request.method)
    result = entry.fn(loaded.bridge, task, graph, entry.config_cls.from_dict(request.params))
    return ShardScores(
        edge_scores=result.edge_scores.detach().double().cpu().numpy(),
        n_examples=task.n_examples,
        n_forward=result.n_forward,
        n_backward=result.n_backward,
        seconds=result.seconds,
        pid=os.getpid(),
        position_scores=None
        if result.position_scores is None
        else result.position_scores.detach().double().cpu().numpy(),
    )


def reduce_shards(shards: list[ShardScores]) -> tuple[np.ndarray, int, int]:
    """Prompt-weighted mean of the shards' scores, and the summed forward/backward passes."""
    weights = np.array([s.n_examples for s in shards], dtype=np.float64)
    scores = np.average(np.stack([s.edge_scores for s in shards]), axis=0, weights=weights)
    return (
        scores,
        sum(s.n_forward for s in shards),
        sum(s.n_backward for s in shards),
    )


def reduce_positional(shards: list[ShardScores]) -> np.ndarray | None:
    """Prompt-weighted mean of the shards' ``[n_edges, Q]`` scores (None where unpositioned)."""
    if all(s.position_scores is None for s in shards):
        return None
    found = [s.position_scores for s in shards]
    if any(f is None for f in found) or len({f.shape for f in found if f is not None}) != 1:
        raise ShardingError("shards disagree on positional scores: " + ", ".join(
            "none" if f is None else str(f.shape) for f in found))  # fmt: skip
    weights = np.array([s.n_examples for s in shards], dtype=np.float64)
    stacked = np.stack([f for f in found if f is not None])
    return np.asarray(np.average(stacked, axis=0, weights=weights))


ShardFn = Callable[[ShardRequest], ShardScores]


def run_sharded(
    requests: list[ShardRequest],
    *,
    address: str | None = None,
    shard_fn: ShardFn = score_shard,
    num_cpus: int | None = None,
) -> list[ShardScores]:
    """Score every shard on Ray (started locally unless ``address`` names a cluster).

    ``shard_fn`` is the task Ray runs (``score_shard``; a test passes one that kills its
    own worker once). Results come back in the order of ``requests``.
    """
    import ray

    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    gpus = 1 if any(r.device.startswith("cuda") for r in requests) else 0
    remote = ray.remote(num_gpus=gpus, max_retries=SHARD_RETRIES)(shard_fn)
    results: list[ShardScores] = ray.get([remote.remote(r) for r in requests])
    return results


def sharded_result(
    spec_model: str,
    spec_task: str,
    method: str,
    config: MethodConfig,
    graph: ComputationalGraph,
    n_examples: int,
    n_shards: int,
    device: str,
    *,
    address: str | None = None,
    shard_fn: ShardFn = score_shard,
    positions: PositionMap | None = None,
) -> ScoreResult:
    """The method's ``ScoreResult`` over all prompts, computed as ``n_shards`` Ray tasks.

    ``positions`` is the whole task's ``PositionMap`` for a positional config."""
    import torch

    from circuitreg.workers.methods.base import ScoreResult
    from circuitreg.workers.methods.eap import node_scores_from_edges

    check_shardable(method, config.ablation)
    if callable(config.metric):
        raise ShardingError("a sharded job names its metric; a Python callable cannot travel")
    started = time.perf_counter()
    params = config.to_dict()
    requests = [
        ShardRequest(spec_model, spec_task, method, params, start, stop, device)
        for start, stop in shard_bounds(n_examples, n_shards)
    ]
    shards = run_sharded(requests, address=address, shard_fn=shard_fn)
    scores, n_forward, n_backward = reduce_shards(shards)
    if scores.shape != (graph.n_edges,):
        raise ShardingError(f"shards scored {scores.shape} edges; the graph has {graph.n_edges}")
    edge_scores = torch.from_numpy(scores).float()
    positional = reduce_positional(shards)
    if positional is not None and (
        positions is None or positional.shape != (graph.n_edges, positions.size)
    ):
        want = None if positions is None else (graph.n_edges, positions.size)
        raise ShardingError(f"shards scored positions {positional.shape}; expected {want}")
    return ScoreResult(
        edge_scores=edge_scores,
        method=method,
        params=params,
        n_forward=n_forward,
        n_backward=n_backward,
        seconds=time.perf_counter() - started,
        node_scores=node_scores_from_edges(edge_scores, graph),
        extra={
            "shards": [
                {"prompts": [r.start, r.stop], "seconds": round(s.seconds, 4)}
                for r, s in zip(requests, shards, strict=True)
            ],
            "executed_on": "ray",
        },
        position_scores=None if positional is None else torch.from_numpy(positional).float(),
        positions=positions if positional is not None else None,
    )
