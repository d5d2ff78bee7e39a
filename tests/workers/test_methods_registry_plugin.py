"""Adding a method is one new module and one line in ``BUILTIN_MODULES``: a throwaway method
written to a temporary module appears in ``circuitreg methods``, runs as a worker's job, and
is listed by the GraphQL API once the catalogue it reads is regenerated."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from typer.testing import CliRunner

from circuitreg.cli import app
from circuitreg.services.api import create_app
from circuitreg.services.api.graphql_api import methods as api_methods
from circuitreg.services.db.base import make_engine
from circuitreg.services.queue import JobQueue, JobSpec
from circuitreg.services.stores.factory import open_store
from circuitreg.services.stores.types import GraphStore
from circuitreg.settings import get_settings
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods import registry
from circuitreg.workers.methods.catalogue import catalogue_json
from circuitreg.workers.methods.selection import Selection, select_edges
from circuitreg.workers.runtime import JobExecutor, Worker, WorkerOptions

from .runtime_support import migrate, tiny_toy_checkpoint

THROWAWAY = '''
"""A method that scores each edge by its position in the graph (for the registry test)."""
import time
from typing import ClassVar

import torch

from circuitreg.workers.methods.base import MethodConfig, ScoreResult
from circuitreg.workers.methods.registry import register_method


class ByOrderConfig(MethodConfig):
    method_name: ClassVar[str] = "by_order"


@register_method("by_order", config=ByOrderConfig, description="Scores edges by graph order")
def by_order(model, task, graph, config, progress=None):
    start = time.perf_counter()
    scores = torch.arange(len(graph.edges), dtype=torch.float32)
    return ScoreResult(
        edge_scores=scores, method="by_order", params=config.to_dict(),
        n_forward=0, n_backward=0, seconds=time.perf_counter() - start,
    )
'''


@pytest.fixture
def throwaway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The temporary module on ``sys.path`` and in the list; the default registry rebuilt."""
    (tmp_path / "throwaway_method.py").write_text(THROWAWAY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(
        registry, "BUILTIN_MODULES", (*registry.BUILTIN_MODULES, "throwaway_method")
    )
    monkeypatch.setattr(registry, "_DEFAULT", None)
    yield "by_order"
    sys.modules.pop("throwaway_method", None)
    registry._DEFAULT = None  # the next default registry is built without it


def test_a_throwaway_method_reaches_cli_worker_and_api(
    throwaway: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listed = CliRunner().invoke(app, ["methods"])
    assert listed.exit_code == 0 and throwaway in listed.output, listed.output

    url = get_settings().resolved_database_url
    migrate(url)
    queue = JobQueue(make_engine(url))
    executor = JobExecutor(open_store(get_settings()), device="cpu")
    spec = JobSpec(
        kind="discovery",
        model=str(tiny_toy_checkpoint(tmp_path / "toy")),
        task="induction:seq_len=6,n=8",
        method=throwaway,
        params={"selection": {"mode": "top_k", "value": 5}},
    )
    job = queue.enqueue(spec)
    Worker(queue, executor, WorkerOptions(worker_id="w", once=True, poll_seconds=0.01)).run()
    done = queue.get(job.id)
    assert done is not None and done.status == "succeeded", done and done.error
    assert done.result is not None
    stored = executor.store.get_circuit(done.result["circuit_id"])
    assert stored is not None and stored.method.name == throwaway
    graph = ComputationalGraph.from_model(executor.models.get(spec.model, "cpu").bridge)
    # by_order scores edge i as i, so a score names its edge: the stored circuit is the five
    # connected edges that top_k 5 picks from those scores, walking down from the last edge
    ranked = torch.arange(len(graph.edges), dtype=torch.float32)
    expected = select_edges(ranked, graph, Selection(mode="top_k", value=5))
    stored_scores = {e.score for e in stored.circuit_edges()}
    assert len(stored_scores) == 5
    assert stored_scores == {float(i) for i in expected.nonzero().flatten().tolist()}
    assert float(len(graph.edges) - 1) in stored_scores  # the best edge reaches the logits

    catalogue = {m["name"]: m for m in json.loads(catalogue_json())}
    monkeypatch.setattr(api_methods, "load_catalogue", lambda: catalogue)
    assert throwaway in _api_method_names(executor.store)


def _api_method_names(store: GraphStore) -> set[str]:
    import anyio

    settings = get_settings().model_copy(update={"anonymous_read": True})

    async def ask() -> set[str]:
        transport = httpx.ASGITransport(app=create_app(settings, store))
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            response = await client.post("/graphql", json={"query": "{ methods { name } }"})
        return {m["name"] for m in response.json()["data"]["methods"]}

    return anyio.run(ask)
