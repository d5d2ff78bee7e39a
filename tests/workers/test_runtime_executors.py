"""The executors on a real (tiny) model and the real embedded store, in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from circuitreg.services.db.base import make_engine
from circuitreg.services.queue import JobQueue, JobSpec
from circuitreg.services.stores.factory import open_store
from circuitreg.services.stores.types import CircuitFilter
from circuitreg.settings import get_settings
from circuitreg.workers.runtime import JobExecutor, Worker, WorkerOptions
from circuitreg.workers.runtime.device import DeviceError, resolve_device

from .runtime_support import discovery_spec, migrate, tiny_toy_checkpoint


@pytest.fixture
def setup(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[JobQueue, JobExecutor, Path]:
    monkeypatch.setenv("CIRCUITREG_DATABASE_URL", database_url)
    get_settings.cache_clear()
    migrate(database_url)
    queue = JobQueue(make_engine(database_url), retry_base_seconds=0.01)
    executor = JobExecutor(open_store(get_settings()), device="cpu")
    return queue, executor, tiny_toy_checkpoint(tmp_path / "toy")


def run_all(queue: JobQueue, executor: JobExecutor) -> None:
    options = WorkerOptions(worker_id="w1", lease_seconds=10, poll_seconds=0.01, once=True)
    while queue.stats()["queued"]:
        Worker(queue, executor, options).run()


def test_runtime_discovery_then_validation_store_results(
    setup: tuple[JobQueue, JobExecutor, Path],
) -> None:
    queue, executor, checkpoint = setup
    job = queue.enqueue(discovery_spec(str(checkpoint), seed=1))
    run_all(queue, executor)
    done = queue.get(job.id)
    assert done is not None and done.status == "succeeded", done and done.error
    assert done.result is not None
    circuit_id = done.result["circuit_id"]
    stored = executor.store.get_circuit(circuit_id)
    assert stored is not None and stored.method.name == "eap"
    assert done.result["n_edges"] == len(stored.circuit_edges()) <= 12

    # Re-running the same job (as after a worker died) stores nothing new.
    assert queue.enqueue(discovery_spec(str(checkpoint), seed=1)).id == job.id
    reports: list[tuple[float, str]] = []
    rerun = executor(job, lambda fraction, message: reports.append((fraction, message)))
    assert rerun["circuit_id"] == circuit_id
    assert len(executor.store.list_circuits(CircuitFilter(), first=10).items) == 1
    fractions = [f for f, _ in reports]
    assert fractions == sorted(fractions) and fractions[0] >= 0 and fractions[-1] <= 1
    assert reports[-1][1] == f"storing circuit {circuit_id}"

    validation = queue.enqueue(
        JobSpec(
            kind="validation",
            model=str(checkpoint),
            task="induction:seq_len=6,n=16",
            circuit_id=circuit_id,
            params={"n_random": 2, "n_knockouts": 2},
        )
    )
    run_all(queue, executor)
    checked = queue.get(validation.id)
    assert checked is not None and checked.status == "succeeded", checked and checked.error
    assert checked.result is not None
    names = {r["name"] for r in checked.result["validation"]}
    assert "faithfulness" in names
    revalidated = executor.store.get_circuit(circuit_id)
    assert revalidated is not None
    assert {r.name for r in revalidated.validation} >= names


def test_runtime_bad_model_fails_after_max_attempts_and_queue_moves_on(
    setup: tuple[JobQueue, JobExecutor, Path],
) -> None:
    queue, executor, checkpoint = setup
    missing = "/nonexistent/model-that-does-not-exist"
    bad = queue.enqueue(discovery_spec(missing).model_copy(update={"priority": 9}), max_attempts=2)
    good = queue.enqueue(discovery_spec(str(checkpoint)))
    run_all(queue, executor)
    failed, succeeded = queue.get(bad.id), queue.get(good.id)
    assert failed is not None and failed.status == "failed" and failed.attempts == 2
    assert failed.error is not None and missing in failed.error.splitlines()[0]
    assert succeeded is not None and succeeded.status == "succeeded"


def test_runtime_bad_params_fail_with_a_clear_error(
    setup: tuple[JobQueue, JobExecutor, Path],
) -> None:
    queue, executor, checkpoint = setup
    job = queue.enqueue(discovery_spec(str(checkpoint), selection="top"), max_attempts=1)
    run_all(queue, executor)
    failed = queue.get(job.id)
    assert failed is not None and failed.status == "failed"
    assert failed.error is not None and "params.selection must be an object" in failed.error


def test_runtime_device_choice() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in {"cpu"} | {f"cuda:{i}" for i in range(16)}
    with pytest.raises(DeviceError, match="not auto, cpu"):
        resolve_device("tpu")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda:1")


def test_runtime_job_without_a_selection_keeps_what_discover_keeps(
    setup: tuple[JobQueue, JobExecutor, Path], tmp_path: Path
) -> None:
    """ACDC returns its own circuit; with no selection named, a queued job stores that circuit,
    the same edges the ``discover`` command writes, not the top 100 by score."""
    from circuitreg.cli.discovery import run_discovery

    queue, executor, checkpoint = setup
    task = "induction:seq_len=6,n=16"
    spec = JobSpec(kind="discovery", model=str(checkpoint), task=task, method="acdc",
                   metric="kl", params={"relative_tau": True})  # fmt: skip
    job = queue.enqueue(spec)
    run_all(queue, executor)
    done = queue.get(job.id)
    assert done is not None and done.status == "succeeded", done and done.error
    assert done.result is not None
    stored = executor.store.get_circuit(done.result["circuit_id"])
    assert stored is not None
    params = {"ablation": spec.ablation, "metric": spec.metric, "relative_tau": "true"}
    cli = run_discovery(str(checkpoint), task, "acdc", params, tmp_path / "c.json",
                        show_progress=False)  # fmt: skip
    kept = {e.name for e in cli.circuit_edges()}
    assert 0 < len(kept) < len(cli.edges) and len(kept) != 100
    assert {e.name for e in stored.circuit_edges()} == kept


def test_runtime_job_result_carries_the_methods_warnings(
    setup: tuple[JobQueue, JobExecutor, Path],
) -> None:
    """Masks driven to nothing keep none of the metric: the job says so, not only the log."""
    queue, executor, checkpoint = setup
    params = {"sparsity_control": "lambda", "sparsity_lambda": 1e3, "steps": 5, "lr": 5.0}
    job = queue.enqueue(JobSpec(kind="discovery", model=str(checkpoint),
                                task="induction:seq_len=6,n=16", method="mask_pruning",
                                params=params))  # fmt: skip
    run_all(queue, executor)
    done = queue.get(job.id)
    assert done is not None and done.status == "succeeded", done and done.error
    assert done.result is not None and done.result["n_edges"] == 0
    [warning] = done.result["warnings"]
    assert "found no faithful circuit" in warning
