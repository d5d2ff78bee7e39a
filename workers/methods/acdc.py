"""ACDC (Conmy et al. 2023): prune edges one at a time, by their measured effect.

Receivers are visited in reverse topological order (logits first); each incoming edge, latest
writer first, is removed (patched to its ablated value) for good when removing it worsens the
metric by less than ``tau`` compared with the current circuit. Every measurement is an exact
intervention on the engine.

Batching, exactly: the decisions are sequential (each compares with the circuit left by the
previous ones), so candidates are evaluated speculatively. Because most edges are removed,
one pass evaluates the current circuit minus the first 1, 2, ..., b candidates; the decisions
are then read in order and are exact until the first edge that is kept, after which the
remaining speculative sets (which assumed it removed) are discarded and re-evaluated. The
speculation never exceeds what one pass holds (a second pass can wait for the first one's
decisions at no cost). On the CPU, where every extra set costs its full share of memory
traffic, the depth also adapts: it drops to the number of sets the last pass used when an
edge is kept and doubles while every speculated edge is removed (on the induction toy most
receivers keep an early edge, and full-depth speculation made batched ACDC slower than one
set per pass). The decisions are the same at every depth. A node
whose outgoing edges are all removed cannot affect the output, so its incoming edges are
removed without measuring (their effect is exactly zero).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import Field

from circuitreg.workers.engine import InterventionEngine
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.base import (
    ConfigError,
    MethodConfig,
    MetricChoice,
    ProgressFn,
    ScoreResult,
)
from circuitreg.workers.methods.registry import register_method
from circuitreg.workers.metrics import within_rounding
from circuitreg.workers.tasks.base import TaskData

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


class ACDCConfig(MethodConfig):
    """Options of ACDC."""

    method_name: ClassVar[str] = "acdc"

    metric: MetricChoice = Field(
        default="kl", description="kl (ACDC's default), logit_diff, prob, cosine or a callable"
    )
    tau: float = Field(
        default=0.01,
        ge=0,
        allow_inf_nan=False,
        description="keep an edge whose removal costs >= tau",
    )
    abs_value: bool = Field(
        default=False,
        description="compare |change| with tau instead of the worsening only",
    )
    relative_tau: bool = Field(
        default=False,
        description="tau is a fraction of the full effect |metric(model) - metric(no edges)|",
    )
    set_batch: int = Field(default=16, ge=1, description="candidate circuits per forward pass")


class _Pruner:
    """The ACDC state: kept edges, the current metric and each edge's measured effect."""

    def __init__(self, engine: InterventionEngine, config: ACDCConfig) -> None:
        self.engine = engine
        self.config = config
        self.graph = engine.graph
        self.keep = torch.ones(self.graph.n_edges, dtype=torch.bool)
        self.effect = torch.zeros(self.graph.n_edges)
        self.current = float(engine.evaluate_circuits(self.keep.unsqueeze(0))[0])
        self.sign = 1.0 if engine.metric.higher_is_better else -1.0
        self.tau = config.tau
        if config.relative_tau:
            empty = float(engine.evaluate_circuits(torch.zeros(1, self.graph.n_edges))[0])
            full_effect = abs(self.current - empty)
            if within_rounding(self.current, empty):
                raise ConfigError(
                    f"relative_tau: the full effect |{engine.metric.name}(model) - "
                    f"{engine.metric.name}(no edges)| is {full_effect:.2g}, 0 up to rounding, with "
                    f"ablation={engine.ablation!r}, so every fraction of it is 0 (the "
                    "corruption changes nothing the metric reads); use an absolute tau or "
                    "another ablation"
                )
            self.tau = config.tau * full_effect
        self.max_depth = max(1, min(config.set_batch, engine.max_sets_per_pass))
        self.adaptive = engine.device.type == "cpu"
        self.depth = self.max_depth

    def cost(self, without: float, before: float) -> float:
        """How much removing an edge worsened the metric (or changed it, with abs_value)."""
        change = (before - without) * self.sign
        return abs(change) if self.config.abs_value else change

    def node_is_dead(self, node: str) -> bool:
        """True when every edge leaving ``node`` has been removed."""
        out = self.graph.outgoing_edges(node)
        return bool(out.numel()) and not bool(self.keep[out].any())

    def prune_slot(self, edges: list[int]) -> None:
        """Decide every candidate edge of one receiver, latest writer first."""
        i = 0
        while i < len(edges):
            chunk = edges[i : i + self.depth]
            masks = self.keep.repeat(len(chunk), 1)
            for j, e in enumerate(chunk):
                masks[j:, e] = False
            values = self.engine.evaluate_circuits(masks).tolist()
            used = 0
            for j, e in enumerate(chunk):
                cost = self.cost(values[j], self.current)
                self.effect[e] = cost
                i += 1
                used += 1
                if cost < self.tau:
                    self.keep[e] = False
                    self.current = values[j]
                else:
                    break  # later speculative sets assumed this edge removed
            if self.adaptive:
                full = used == len(chunk) and not self.keep[chunk[-1]]
                self.depth = min(self.max_depth, 2 * self.depth) if full else used


@register_method(
    "acdc",
    config=ACDCConfig,
    description="ACDC: greedy exact pruning of edges whose removal costs < tau",
)
def acdc(
    model: TransformerBridge,
    task: TaskData,
    graph: ComputationalGraph,
    config: ACDCConfig,
    progress: ProgressFn | None = None,
) -> ScoreResult:
    """Run ACDC; ``edge_scores`` are the measured removal costs, ``circuit`` the kept edges."""
    start = time.perf_counter()
    engine = InterventionEngine(
        model, graph, task, config.ablation, config.metric, config.batch_size, config.set_batch
    )
    pruner = _Pruner(engine, config)
    slots = list(reversed(graph.slots))
    for n, slot in enumerate(slots):
        edges = list(reversed(range(slot.edge_start, slot.edge_stop)))
        if slot.node != "logits" and pruner.node_is_dead(slot.node):
            pruner.keep[edges] = False
        else:
            pruner.prune_slot(edges)
        if progress is not None:
            progress((n + 1) / len(slots), f"ACDC receiver {n + 1}/{len(slots)}: {slot.node}")
    circuit = graph.prune_dangling(pruner.keep)
    return ScoreResult(
        edge_scores=pruner.effect,
        method=config.method_name,
        params=config.to_dict(),
        n_forward=engine.n_forward,
        n_backward=0,
        seconds=time.perf_counter() - start,
        circuit=circuit,
        extra={
            "n_kept": int(circuit.sum()),
            "final_metric": pruner.current,
            "tau_absolute": pruner.tau,  # tau itself, or its fraction of the full effect
        },
    )
