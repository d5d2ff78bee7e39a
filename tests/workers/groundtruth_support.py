"""Shared set-up for the ground-truth validation tests: tracr and toy models with their tasks.

Training the induction toy takes 10-30 s per seed, so the runs are trained once per pytest
session into the session's base temporary directory and read back by every test (and every
test module) that needs them, instead of once per test's isolated data directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformer_lens.model_bridge import TransformerBridge

from circuitreg.schema import CircuitDocument
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.base import ScoreResult, to_document
from circuitreg.workers.methods.registry import default_registry
from circuitreg.workers.methods.selection import Selection
from circuitreg.workers.models import LoadedModel, load_model
from circuitreg.workers.tasks.base import TaskContext, TaskData
from circuitreg.workers.tasks.registry import build_task
from circuitreg.workers.toy import ToyConfig, ToyRun, detect_heads
from circuitreg.workers.toy.train import COMPLETE_MARKER, load_run, train_induction
from circuitreg.workers.tracr import ground_truth_edges
from circuitreg.workers.validation.api import EngineEvaluator

PREVIOUS_TOKEN = "previous-token head"
INDUCTION = "induction head"
# head_detector scores above which a head counts as doing the job. In the trained toy the
# work is spread: every layer-1 head scores ~0.42 as an induction head and two or three
# layer-0 heads score 0.25-0.56 as previous-token heads, so a single best head per role
# is only part of the mechanism.
HEAD_SCORE_MIN = 0.2


@dataclass(frozen=True)
class Setup:
    """A loaded model with its task, graph and a resample-ablation evaluator."""

    loaded: LoadedModel
    task: TaskData
    graph: ComputationalGraph

    @property
    def bridge(self) -> TransformerBridge:
        return self.loaded.bridge

    def evaluator(self, ablation: str = "resample") -> EngineEvaluator:
        return EngineEvaluator(self.bridge, self.task, self.graph, ablation)

    def mask(self, edges: set[str]) -> torch.Tensor:
        """Boolean kept-edge mask; every named edge must exist in the graph."""
        missing = edges - set(self.graph.edges)
        assert not missing, f"edges not in the graph: {sorted(missing)}"
        return torch.tensor([name in edges for name in self.graph.edges])

    def random_masks(self, size: int, count: int, seed: int = 0) -> list[torch.Tensor]:
        """``count`` random circuits of ``size`` edges drawn from the whole graph."""
        generator = torch.Generator().manual_seed(seed)
        masks = []
        for _ in range(count):
            mask = torch.zeros(self.graph.n_edges, dtype=torch.bool)
            mask[torch.randperm(self.graph.n_edges, generator=generator)[:size]] = True
            masks.append(mask)
        return masks


def tracr_setup(program: str, n: int = 32) -> Setup:
    loaded = load_model(f"tracr:{program}", "cpu")
    task = build_task(f"tracr:program={program},n={n}", context=TaskContext.from_loaded(loaded))
    return Setup(loaded, task, ComputationalGraph.from_model(loaded.bridge))


def tracr_truth(setup: Setup) -> set[str]:
    return set(ground_truth_edges(setup.loaded.info["fixture"]))


def toy_run(seed: int, root: Path) -> ToyRun:
    """The default-config toy for ``seed``, trained once under ``root`` and then reused."""
    run_dir = root / f"induction-toy-seed{seed}"
    if (run_dir / COMPLETE_MARKER).is_file():
        return load_run(run_dir)
    return train_induction(ToyConfig(seed=seed), out_dir=run_dir)


def toy_setup(run: ToyRun, n: int = 32) -> Setup:
    """The trained toy with the induction task (``first`` corruption) at its training length."""
    loaded = load_model(str(run.final.path), "cpu")
    spec = f"induction:seq_len={run.seq_len},n={n},corrupt=first"
    task = build_task(spec, context=TaskContext.from_loaded(loaded))
    return Setup(loaded, task, ComputationalGraph.from_model(loaded.bridge))


def toy_roles(run: ToyRun, bridge: TransformerBridge) -> dict[str, tuple[str, ...]]:
    """Role labels from head_detector: layer-0 previous-token and layer-1 induction heads
    scoring at least ``HEAD_SCORE_MIN``."""
    heads = detect_heads(bridge, seq_len=run.seq_len, bos_token=run.bos_token)
    labels: dict[str, tuple[str, ...]] = {}
    for kind, role, layer in (
        ("previous_token_head", PREVIOUS_TOKEN, 0),
        ("induction_head", INDUCTION, 1),
    ):
        for name, score in heads[kind]:
            if score >= HEAD_SCORE_MIN and name.startswith(f"a{layer}."):
                labels[name] = (*labels.get(name, ()), role)
    return labels


def heads_with(labels: dict[str, tuple[str, ...]], role: str) -> list[str]:
    return sorted(name for name, roles in labels.items() if role in roles)


def eap_ig_scores(setup: Setup) -> ScoreResult:
    info = default_registry().get("eap_ig")
    return info.fn(setup.bridge, setup.task, setup.graph, info.config({"ablation": "resample"}))


def document(
    setup: Setup,
    scores: ScoreResult,
    selection: Selection | torch.Tensor,
    labels: dict[str, tuple[str, ...]] | None = None,
) -> CircuitDocument:
    """The method's circuit document, with role labels checked against its components."""
    doc = to_document(scores, setup.graph, selection, setup.loaded.ref, setup.task)
    return CircuitDocument.model_validate({**doc.model_dump(), "labels": labels or {}})
