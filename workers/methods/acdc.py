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

Positional ACDC (``positions="index"`` or ``"spans"``, issue 18) decides positional edges
the same way: receivers in reverse topological order, each one's edges latest writer first
and, per edge, its positions latest first, each removed at the tokens of its position only
(the engine built with the run's ``PositionMap``: positional patches ``[S, n_edges * Q]`` on
its prepared batches, through the positional forward, speculated and stacked as above within
the engine's positional memory plan). A node is dead
once its outgoing edges are removed at every position (a head's key and value inputs at one
token reach its outputs at later ones, so deadness per position would be wrong).
``position_scores`` ``[n_edges, Q]`` are the measured removal costs, ``circuit`` the kept
positional edges ``[n_edges, Q]`` and ``edge_scores`` their sum over positions (costs
measured in sequence; they rank edges, they are not an unpositioned ACDC run).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar, Literal

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
from circuitreg.workers.methods.eap import position_map
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
    positions: Literal["index", "spans"] | None = Field(
        default=None,
        description="decide positional edges (each edge at each token index or task span)",
    )


class _Pruner:
    """The ACDC state: kept edges, the current metric and each edge's measured effect."""

    def __init__(self, engine: InterventionEngine, config: ACDCConfig) -> None:
        self.engine = engine
        self.config = config
        self.graph = engine.graph
        # positional edges where the engine has positions: edge e at label q is e * Q + q
        self.q = 1 if engine.positions is None else engine.positions.size
        n = engine.patch_width
        self.keep = torch.ones(n, dtype=torch.bool)
        self.effect = torch.zeros(n)
        self.current = float(engine.evaluate_circuits(self.keep.unsqueeze(0))[0])
        self.sign = 1.0 if engine.metric.higher_is_better else -1.0
        self.tau = config.tau
        if config.relative_tau:
            empty = float(engine.evaluate_circuits(torch.zeros(1, n))[0])
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
        positional = engine.positions is not None
        per_pass = engine.max_positional_sets_per_pass if positional else engine.max_sets_per_pass
        self.max_depth = max(1, min(config.set_batch, per_pass))
        self.adaptive = engine.device.type == "cpu"
        self.depth = self.max_depth

    def cost(self, without: float, before: float) -> float:
        """How much removing an edge worsened the metric (or changed it, with abs_value)."""
        change = (before - without) * self.sign
        return abs(change) if self.config.abs_value else change

    def node_is_dead(self, node: str) -> bool:
        """True when every edge leaving ``node`` has been removed (at every position)."""
        edges = self.graph.outgoing_edges(node)
        out = (edges[:, None] * self.q + torch.arange(self.q)).flatten()
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
    labelled = position_map(graph, task, config.positions)
    engine = InterventionEngine(
        model, graph, task, config.ablation, config.metric, config.batch_size, config.set_batch,
        positions=labelled,
    )  # fmt: skip
    pruner = _Pruner(engine, config)
    q = pruner.q
    slots = list(reversed(graph.slots))
    for n, slot in enumerate(slots):
        edges = [e * q + p for e in reversed(range(slot.edge_start, slot.edge_stop))
                 for p in reversed(range(q))]  # fmt: skip
        if slot.node != "logits" and pruner.node_is_dead(slot.node):
            pruner.keep[edges] = False
        else:
            pruner.prune_slot(edges)
        if progress is not None:
            progress((n + 1) / len(slots), f"ACDC receiver {n + 1}/{len(slots)}: {slot.node}")
    if labelled is None:
        circuit = graph.prune_dangling(pruner.keep)
        edge_scores, position_scores = pruner.effect, None
    else:
        circuit = pruner.keep.view(graph.n_edges, q).clone()
        circuit[~graph.prune_dangling(circuit.any(-1))] = False
        position_scores = pruner.effect.view(graph.n_edges, q).clone()
        edge_scores = position_scores.sum(-1)
    return ScoreResult(
        edge_scores=edge_scores,
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
        position_scores=position_scores,
        positions=labelled,
    )
