"""CD-T: contextual decomposition for transformers (Hsu, Zhou et al. 2024), node and edge scores.

Each writer ``w`` of the graph is, in turn, the *source* of a decomposition: its output is
split into the relevant ``delta = clean_w - ablated_w`` (the ablation the config names is the
baseline: resample takes the corrupted run's output, zero all of it, mean the dataset mean,
which is the paper's ``set_irrel_to_mean``) and the irrelevant ``ablated_w``, and the pair is
carried through the rest of the network by CD-T's rules (``workers/engine/contextual.py``:
linear maps exact with the bias split, norms with the full activation's scale, activations
by their linearisation, attention with the pattern from the full activation and the values
decomposed). With ``m`` the metric (mean over prompts) and ``gamma`` the irrelevant part of
the logits:

- **node score** of ``w``: ``F_w = m(gamma) - m(clean)``, the metric with ``w``'s relevant part
  taken out of the logits, minus the clean metric. Same sign as EAP and path patching
  (negative when ``w`` helps the metric). This is the paper's source-to-logits contribution.
- **edge score** of ``w -> r``: the part of ``F_w`` that flows through ``r``'s input. The source
  reaches each reader ``r`` as ``c_r * delta``; the edge's score is
  ``integral_0^1 dF_w/dc_r dt`` along ``c = t`` for all of ``w``'s edges (midpoint rule,
  ``steps`` points), so a source's edges sum to its node score up to the rule's error
  (exactly where ``F_w`` is linear or quadratic in ``c``; ``extra["completeness_gap"]``
  reports the largest difference, relative to the largest node score).

Where it is exact: where the rules make ``F_w`` linear in the coefficients (input-independent
attention patterns, no MLP nonlinearity, ``bias_rule=irrelevant`` or a bias-free model, a
metric linear in the logits such as ``logit_diff``), every edge score equals the exact effect
of patching that edge alone and every node score that of patching the node (the tests check
both against the intervention engine to 1e-5). With irrelevant-first activations, the pattern
rule, ``bias_rule=irrelevant`` and no norms, node scores are exact node patching for any model.

Departures from the paper: the paper scores nodes (heads at positions) and reads a source's
contribution to a target node's output through all paths; this graph's edges are direct
(writer output to reader input), so the edge split above is ours. The attention output bias
``b_O`` goes to the irrelevant part (it belongs to no node here); the paper's code also
re-signs mixed-sign parts elementwise (``normalize_rel_irrel``), which is not done here, so
every rule keeps ``beta + gamma`` equal to the activation.

Cost per batch of examples: the engine's clean and ablated forwards, then per batch of
``set_batch`` sources one forward for the node scores and ``steps`` forwards and backwards for
the edge split.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import Field

from circuitreg.workers.engine import InterventionEngine, PreparedBatch
from circuitreg.workers.engine.contextual import (
    ActivationRule,
    AttentionRule,
    BiasRule,
    CDModel,
    CDRules,
    cd_forward,
    make_sources,
    read_cd_model,
)
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.base import MethodConfig, ProgressFn, ScoreResult
from circuitreg.workers.methods.registry import register_method
from circuitreg.workers.tasks.base import TaskData

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


class CDTConfig(MethodConfig):
    """Options of CD-T: the decomposition's rules and the edge split's integration."""

    method_name: ClassVar[str] = "cd_t"

    activation_rule: ActivationRule = Field(
        default="shapley",
        description="shapley: the two-player Shapley average of CD's linearisation; "
        "irrelevant_first: act(gamma) to gamma, the rest to beta (CD-T's released code)",
    )
    attention_rule: AttentionRule = Field(
        default="values",
        description="values: pattern from the full activation, values decomposed (CD-T; edges "
        "into q/k score 0); pattern: the whole head by the irrelevant-first rule",
    )
    bias_rule: BiasRule = Field(
        default="proportional",
        description="proportional: biases split by |beta| and |gamma| (the paper); "
        "irrelevant: every bias to gamma (exact on linear models)",
    )
    steps: int = Field(
        default=1, ge=1, le=64, description="midpoint steps of the edge split's integral over c"
    )
    set_batch: int = Field(default=16, ge=1, description="sources decomposed per forward pass")

    @property
    def rules(self) -> CDRules:
        """The decomposition's rules for these options."""
        return CDRules(self.activation_rule, self.attention_rule, self.bias_rule)


def edge_table(graph: ComputationalGraph) -> torch.Tensor:
    """``[n_writers, n_slots]``: the index of edge ``writer -> slot``, -1 where none."""
    table = torch.full((len(graph.writers), len(graph.slots)), -1, dtype=torch.long)
    for j, slot in enumerate(graph.slots):
        for offset, writer in enumerate(slot.writers):
            table[writer, j] = slot.edge_start + offset
    return table


class _Scorer:
    """CD-T's passes over one engine's batches, with their count."""

    def __init__(self, engine: InterventionEngine, cd: CDModel, config: CDTConfig) -> None:
        self.engine, self.cd, self.config = engine, cd, config
        self.table = edge_table(engine.graph)
        self.n_forward = 0
        self.n_backward = 0

    def effect(self, batch: PreparedBatch, writers: list[int], coeff: torch.Tensor) -> torch.Tensor:
        """``F_w`` ``[S]`` for each source (weighted by the batch's share of the examples)."""
        graph = self.engine.graph
        sources = make_sources(graph, batch.clean_outputs, batch.ablated, writers, coeff)
        out = cd_forward(self.cd, graph, batch.clean_outputs, sources, batch.task.positions,
                         self.config.rules)  # fmt: skip
        self.n_forward += 1
        clean = self.engine.metric_of(batch, out.clean.unsqueeze(0))
        return self.engine.metric_of(batch, out.gamma) - clean

    def score(
        self, batch: PreparedBatch, writers: list[int], edges: torch.Tensor, nodes: torch.Tensor
    ) -> None:
        """Add these sources' node scores and edge split on ``batch`` to ``edges``/``nodes``."""
        shape = (len(writers), len(self.engine.graph.slots))
        dtype, device = self.engine.weights.dtype, self.engine.device
        with torch.no_grad():
            full = self.effect(batch, writers, torch.ones(shape, dtype=dtype, device=device))
        nodes[writers] += full.double().cpu()
        steps = self.config.steps
        for i in range(steps):
            t = (i + 0.5) / steps
            coeff = torch.full(shape, t, dtype=dtype, device=device, requires_grad=True)
            (grad,) = torch.autograd.grad(self.effect(batch, writers, coeff).sum(), coeff)
            self.n_backward += 1
            index = self.table[writers]
            valid = index >= 0
            edges.index_add_(0, index[valid], grad.double().cpu()[valid] / steps)


@register_method(
    CDTConfig.method_name,
    config=CDTConfig,
    description="Contextual decomposition (CD-T): each writer's relevant part carried through "
    "attention and MLPs by CD's rules; node scores and their split over edges",
)
def cd_t(
    model: TransformerBridge,
    task: TaskData,
    graph: ComputationalGraph,
    config: CDTConfig,
    progress: ProgressFn | None = None,
) -> ScoreResult:
    """Score every writer and edge of ``graph`` with CD-T."""
    started = time.perf_counter()
    engine = InterventionEngine(
        model, graph, task, config.ablation, config.metric, config.batch_size
    )
    scorer = _Scorer(engine, read_cd_model(model, engine.weights), config)
    edges = torch.zeros(graph.n_edges, dtype=torch.float64)
    nodes = torch.zeros(graph.n_nodes, dtype=torch.float64)
    writers = list(range(len(graph.writers)))
    chunks = [writers[i : i + config.set_batch] for i in range(0, len(writers), config.set_batch)]
    batches = list(engine.batches())
    for b, batch in enumerate(batches):
        for c, chunk in enumerate(chunks):
            scorer.score(batch, chunk, edges, nodes)
            if progress is not None:
                done = (b * len(chunks) + c + 1) / (len(batches) * len(chunks))
                progress(done, f"CD-T batch {b + 1}/{len(batches)}, sources {chunk[-1] + 1}")
    split = torch.zeros_like(nodes).index_add_(0, graph.edge_source, edges)
    gap = float((split - nodes).abs().max() / nodes.abs().max().clamp_min(1e-30))
    return ScoreResult(
        edge_scores=edges.float(),
        node_scores=nodes.float(),
        method=config.method_name,
        params=config.to_dict(),
        n_forward=engine.n_forward + scorer.n_forward,
        n_backward=scorer.n_backward,
        seconds=time.perf_counter() - started,
        extra={
            "node_scores": "m(irrelevant logits) - m(clean) with the writer as the source",
            "edge_scores": "the source's node score split over its edges (integral of dF/dc)",
            "completeness_gap": gap,
            "corruption": task.corruption,
        },
    )
