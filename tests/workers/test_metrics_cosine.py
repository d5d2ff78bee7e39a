"""The cosine metric: values on known logits, its extreme at the clean run, gradients through
it (EAP, EAP-IG), and ACDC, the CLI and the worker run with ``metric=cosine`` end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge
from typer.testing import CliRunner

from circuitreg.cli import app
from circuitreg.schema import CircuitDocument
from circuitreg.workers.engine import InterventionEngine
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.registry import default_registry
from circuitreg.workers.metrics import METRICS, metric_name, resolve_metric
from circuitreg.workers.tasks.base import TaskData
from circuitreg.workers.tasks.induction import induction_task
from circuitreg.workers.validation import validate

from .runtime_support import tiny_toy_checkpoint
from .tiny_bridges import WITH_MLP
from .validation_planted import PLANTED, circuit_document, planted_model, planted_task, true_edges

pytestmark = pytest.mark.usefixtures("one_thread")


def _task() -> TaskData:
    tokens = torch.zeros(2, 3, dtype=torch.long)
    return TaskData(
        name="t", spec={}, clean=tokens, corrupted=tokens,
        positions=torch.tensor([[1, 2], [1, 2]]), answers=torch.tensor([[0, 1], [2, 0]]),
        distractors=None, corruption="x",
    )  # fmt: skip


def test_cosine_on_known_logits() -> None:
    """Centred over the vocabulary, then the cosine, then the mean over read positions."""
    cosine = resolve_metric("cosine")
    assert cosine.name == "cosine" and cosine.higher_is_better and metric_name("cosine") == "cosine"
    clean_logits = torch.tensor([1.0, 0.0, -1.0]).expand(2, 2, 3)  # [N, P, V]
    clean = torch.log_softmax(clean_logits, dim=-1)
    logits = torch.empty(3, 2, 2, 3)  # [S, N, P, V]
    logits[0] = torch.tensor([-1.0, 0.0, 1.0])  # reversed: -1
    logits[1] = torch.tensor([0.0, 1.0, 0.0])  # centred (-1/3, 2/3, -1/3): orthogonal, 0
    logits[2, :, 0] = torch.tensor([1.0, -1.0, 0.0])  # (1, 0, -1).(1, -1, 0) / 2 = 0.5
    logits[2, :, 1] = torch.tensor([4.0, 2.0, 0.0])  # shifted and scaled clean logits: 1
    per_example = cosine.per_example(logits, _task(), clean)
    assert per_example.shape == (3, 2)
    expected = torch.tensor([[-1.0, -1.0], [0.0, 0.0], [0.75, 0.75]])
    assert torch.allclose(per_example, expected, atol=1e-6)
    assert torch.allclose(cosine(logits, _task(), clean), expected.mean(-1), atol=1e-6)
    # no leading set dimension works too, as for every metric
    assert cosine.per_example(logits[2], _task(), clean).tolist() == pytest.approx([0.75, 0.75])
    # all logits equal: the centred vector is zero, and its similarity is 0, not NaN
    flat = cosine.per_example(torch.ones(1, 2, 2, 3), _task(), clean)
    assert torch.equal(flat, torch.zeros(1, 2))


def test_identical_logits_give_the_extreme_value_one() -> None:
    generator = torch.Generator().manual_seed(0)
    clean_logits = torch.randn(2, 2, 50, generator=generator) * 5
    clean = torch.log_softmax(clean_logits, dim=-1)
    other = torch.randn(16, 2, 2, 50, generator=generator) * 5
    cosine = resolve_metric("cosine")
    same = cosine.per_example(clean_logits.unsqueeze(0), _task(), clean)
    assert torch.allclose(same, torch.ones(1, 2), atol=1e-6)
    values = cosine.per_example(other, _task(), clean)
    assert bool((values <= 1 + 1e-6).all() and (values >= -1 - 1e-6).all())
    assert float(values.max()) < float(same.min())
    assert "cosine" in METRICS


def test_gradients_flow_through_cosine() -> None:
    """Autograd through the metric equals central finite differences away from clean."""
    generator = torch.Generator().manual_seed(1)
    clean = torch.log_softmax(torch.randn(2, 2, 7, generator=generator, dtype=torch.float64), -1)
    logits = torch.randn(1, 2, 2, 7, generator=generator, dtype=torch.float64)
    logits.requires_grad_(True)
    cosine = resolve_metric("cosine")
    cosine(logits, _task(), clean).sum().backward()
    assert logits.grad is not None
    eps = 1e-3
    for index in [(0, 0, 0, 0), (0, 1, 1, 3), (0, 0, 1, 6)]:
        up, down = logits.detach().clone(), logits.detach().clone()
        up[index] += eps
        down[index] -= eps
        finite = (cosine(up, _task(), clean) - cosine(down, _task(), clean)).item() / (2 * eps)
        assert logits.grad[index].item() == pytest.approx(finite, rel=1e-2, abs=1e-5)


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, ComputationalGraph, TaskData]:
    model = TransformerBridge.boot_native(WITH_MLP)
    return model, ComputationalGraph.from_model(model), induction_task(5, 8, 40, seed=1)


def test_eap_and_eap_ig_run_with_cosine(tiny: tuple[Any, ComputationalGraph, TaskData]) -> None:
    """Cosine, like KL, is at its maximum at the clean run, so its gradient there is zero:
    EAP (the gradient at the clean run) scores every edge ~0 with it, and equals the
    derivative of exact patching (also ~0). EAP-IG integrates along the path to the
    corrupted run, where the gradient is not zero, and scores edges as with KL."""
    model, graph, task = tiny
    registry = default_registry()
    eap, eap_ig = registry.get("eap"), registry.get("eap_ig")
    plain = eap.fn(model, task, graph, eap.config({"metric": "cosine"}))
    assert plain.edge_scores.isfinite().all() and plain.n_backward >= 1
    assert float(plain.edge_scores.abs().max()) < 1e-6
    engine = InterventionEngine(model, graph, task, metric="cosine")
    top = torch.topk(torch.randn(graph.n_edges, generator=torch.Generator().manual_seed(0)), 3)
    eps = 1e-3
    patch = torch.zeros(2 * len(top.indices), graph.n_edges, dtype=torch.float64)
    for i, e in enumerate(top.indices.tolist()):
        patch[2 * i, e], patch[2 * i + 1, e] = eps, -eps
    values = engine.evaluate(patch)
    finite = (values[0::2] - values[1::2]) / (2 * eps)
    assert float(finite.abs().max()) < 1e-4

    ig = eap_ig.fn(model, task, graph, eap_ig.config({"metric": "cosine", "steps": "5"}))
    assert ig.edge_scores.isfinite().all() and float(ig.edge_scores.abs().max()) > 1e-3
    kl = eap_ig.fn(model, task, graph, eap_ig.config({"metric": "kl", "steps": "5"}))
    # both measure closeness to the clean output: an edge that moves one moves the other,
    # in the opposite direction (cosine drops where KL grows)
    both = torch.stack([ig.edge_scores.double(), kl.edge_scores.double()])
    assert float(torch.corrcoef(both)[0, 1]) < -0.5


def test_acdc_with_cosine_finds_the_planted_path_and_validates() -> None:
    """ACDC (higher-is-better cosine: cost = drop of cosine on removal) keeps only edges
    among the planted heads, and the circuit is faithful under the cosine metric."""
    model = planted_model()
    task, graph = planted_task(model), ComputationalGraph.from_model(model)
    acdc = default_registry().get("acdc")
    config = acdc.config({"metric": "cosine", "tau": "0.01", "set_batch": "8"})
    assert config.metric == "cosine"
    result = acdc.fn(model, task, graph, config)
    assert result.circuit is not None
    kept = set(graph.edges_from_mask(result.circuit))
    assert kept and kept <= set(true_edges(graph))
    assert {e.split("->")[0] for e in kept} >= {"input", *PLANTED}
    doc = circuit_document(graph, sorted(kept))
    results = {r.name: r for r in validate(model, task, graph, doc, metric="cosine")}
    assert all(r.metric == "cosine" for r in results.values())
    faithfulness = results["faithfulness"].values
    assert faithfulness["m_full"] == pytest.approx(1.0, abs=1e-5)
    assert faithfulness["faithfulness"] >= 0.9


def test_cli_discover_and_validate_take_cosine(tmp_path: Path) -> None:
    checkpoint = tiny_toy_checkpoint(tmp_path / "toy")
    out = tmp_path / "circuit.json"
    runner = CliRunner()
    task = "induction:seq_len=6,n=16"
    found = runner.invoke(
        app,
        ["discover", "--model", str(checkpoint), "--task", task, "--method", "eap_ig",
         "--param", "metric=cosine", "--param", "steps=2", "--top-k", "8", "--out", str(out),
         "--quiet"],
    )  # fmt: skip
    assert found.exit_code == 0, found.output
    doc = CircuitDocument.from_json(out.read_text())
    assert doc.metric == "cosine"
    checked = runner.invoke(
        app,
        ["validate", str(out), "--model", str(checkpoint), "--task", task, "--metric", "cosine",
         "--no-plots", "--quiet"],
    )  # fmt: skip
    assert checked.exit_code == 0, checked.output
    assert "resample ablation, cosine" in checked.output
    assert "suffix_ablation" in checked.output and "|dlogits| circuit" in checked.output
    refused = runner.invoke(
        app, ["validate", str(out), "--model", str(checkpoint), "--task", task, "--metric", "cos"]
    )
    assert refused.exit_code == 2 and "cos" in refused.output


def test_a_worker_job_runs_and_validates_with_cosine(tmp_path: Path, monkeypatch: Any) -> None:
    from circuitreg.services.db.base import make_engine
    from circuitreg.services.queue import JobQueue, JobSpec
    from circuitreg.services.stores.factory import open_store
    from circuitreg.settings import get_settings
    from circuitreg.workers.runtime import JobExecutor, Worker, WorkerOptions

    from .runtime_support import migrate

    url = f"sqlite:///{tmp_path / 'registry.sqlite'}"
    monkeypatch.setenv("CIRCUITREG_DATABASE_URL", url)
    monkeypatch.setenv("CIRCUITREG_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    try:
        migrate(url)
        queue = JobQueue(make_engine(url), retry_base_seconds=0.01)
        executor = JobExecutor(open_store(get_settings()), device="cpu")
        checkpoint = str(tiny_toy_checkpoint(tmp_path / "toy"))
        task = "induction:seq_len=6,n=16"
        options = WorkerOptions(worker_id="w1", lease_seconds=10, poll_seconds=0.01, once=True)
        found = queue.enqueue(
            JobSpec(kind="discovery", model=checkpoint, task=task, method="eap_ig",
                    metric="cosine", params={"steps": 2, "selection": {"mode": "top_k",
                                                                       "value": 8}})
        )  # fmt: skip
        Worker(queue, executor, options).run()
        done = queue.get(found.id)
        assert done is not None and done.status == "succeeded", done and done.error
        assert done.result is not None
        circuit_id = done.result["circuit_id"]
        checked = queue.enqueue(
            JobSpec(kind="validation", model=checkpoint, task=task, metric="cosine",
                    circuit_id=circuit_id, params={"n_random": 2, "n_knockouts": 2})
        )  # fmt: skip
        Worker(queue, executor, options).run()
        validated = queue.get(checked.id)
        assert validated is not None and validated.status == "succeeded", validated.error
        stored = executor.store.get_circuit(circuit_id)
        assert stored is not None and stored.metric == "cosine"
        assert {r.metric for r in stored.validation} == {"cosine"}
        assert "suffix_ablation" in {r.name for r in stored.validation}
    finally:
        get_settings.cache_clear()
