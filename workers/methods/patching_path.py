"""Path patching: the effect of a sender's ablated output reaching only chosen receiver inputs.

Path patching (Wang et al. 2022, Goldowsky-Dill et al. 2023) asks how much of the metric
flows from a sender node into particular receiver inputs (a head's q, k or v input, an MLP,
the logits) *directly*, not through anything in between. In the edge graph that is exactly
patching the edges ``sender -> receiver<input>`` from the ablated run while every other edge
stays clean, and the intervention engine does that exactly, recomputing everything
downstream of the receivers. Senders are batched: each sender is one patch row, and the
engine stacks ``set_batch`` rows into one forward pass.

``transformer_lens.patching.get_act_patch_direct_path`` computes the same quantity for
head-to-head paths (one forward per destination head, clean into corrupted, on bridges with a
split q/k/v input fork); the tests check this module against it. This module adds any sender
(input, heads, MLPs), any receiver input including MLPs and logits, joint receiver sets,
stacking many senders per forward, zero and mean ablation, and boot_native bridges, which
have no q/k/v fork.

As a discovery method it reports, for the receiver inputs named in the config (all of them
by default), every edge's own single-edge effect as its edge score, and every sender's joint
effect on the whole receiver set as its node score. Edges into other receivers score 0.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import Field

from circuitreg.schema.names import LOGITS, ComponentKind, Receiver, edge_name, parse_node
from circuitreg.workers.engine import InterventionEngine
from circuitreg.workers.graph import ComputationalGraph, GraphError
from circuitreg.workers.methods.base import ConfigError, MethodConfig, ProgressFn, ScoreResult
from circuitreg.workers.methods.registry import register_method
from circuitreg.workers.tasks.base import TaskData

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

_RECEIVER = re.compile(r"^(?P<node>[^<>\s]+?)(?:<(?P<input>[qkv])>)?$")


class PathPatchingConfig(MethodConfig):
    """Options of path patching."""

    method_name: ClassVar[str] = "path_patching"

    receivers: str = Field(
        default="",
        description="comma-separated receiver inputs, e.g. 'a1.h2<k>,a1.h3<q>,m1,logits' "
        "(a head without <q|k|v> means all three); empty: every receiver input",
    )
    senders: str = Field(
        default="", description="comma-separated sender nodes; empty: every writer"
    )
    set_batch: int = Field(default=16, ge=1, description="senders patched per stacked forward")


def receiver_slots(graph: ComputationalGraph, spec: str) -> list[tuple[str, Receiver | None]]:
    """Parse receiver inputs (``a1.h2<k>``, ``a1.h2``, ``m0``, ``logits``); empty: all of them."""
    if not spec.strip():
        return [(slot.node, slot.receiver) for slot in graph.slots]
    out: list[tuple[str, Receiver | None]] = []
    for item in (part.strip() for part in spec.split(",")):
        match = _RECEIVER.match(item)
        if not match:
            raise ConfigError(f"receiver {item!r} is not node or node<q|k|v>")
        node = match["node"]
        graph.node_index(node)
        kind = parse_node(node).kind
        if kind is ComponentKind.EMBED:
            raise ConfigError(f"receiver {item!r}: the input node reads nothing")
        if kind is ComponentKind.ATTN_HEAD:
            inputs = [Receiver(match["input"])] if match["input"] else list(Receiver)
            out.extend((node, r) for r in inputs)
        elif match["input"]:
            raise ConfigError(f"receiver {item!r}: only attention heads have q/k/v inputs")
        else:
            out.append((node, None))
    return list(dict.fromkeys(out))


def sender_nodes(
    graph: ComputationalGraph, spec: str, receivers: Sequence[tuple[str, Receiver | None]]
) -> list[str]:
    """Parse sender nodes; empty: every writer that feeds at least one receiver."""
    feeding = {
        graph.writers[w]
        for slot in graph.slots
        if (slot.node, slot.receiver) in set(receivers)
        for w in slot.writers
    }
    if not spec.strip():
        return [w for w in graph.writers if w in feeding]
    senders = list(dict.fromkeys(part.strip() for part in spec.split(",")))
    for node in senders:
        graph.node_index(node)
        if node == LOGITS:
            raise ConfigError("the logits node writes nothing, so it cannot be a sender")
        if node not in feeding:
            raise ConfigError(f"sender {node!r} feeds none of the receivers (it is not earlier)")
    return senders


def path_patch_rows(
    graph: ComputationalGraph,
    senders: Sequence[str],
    receivers: Sequence[tuple[str, Receiver | None]],
) -> torch.Tensor:
    """Patch rows ``[len(senders), n_edges]``: row ``i`` patches ``senders[i] -> receivers``.

    Receivers that the sender does not feed (same layer or earlier) are skipped; a sender
    that feeds none of them is an error.
    """
    rows = torch.zeros(len(senders), graph.n_edges)
    for i, sender in enumerate(senders):
        for node, recv in receivers:
            name = edge_name(sender, node, recv)
            try:
                rows[i, graph.edge_index(name)] = 1.0
            except GraphError:
                continue
        if not rows[i].any():
            raise ConfigError(f"sender {sender!r} has no edge into the receivers")
    return rows


def path_patch(
    engine: InterventionEngine,
    senders: Sequence[str],
    receivers: Sequence[tuple[str, Receiver | None]],
) -> torch.Tensor:
    """Metric change ``[len(senders)]`` when each sender reaches only the receivers ablated."""
    rows = path_patch_rows(engine.graph, senders, receivers)
    patched = engine.evaluate(torch.cat([torch.zeros(1, engine.graph.n_edges), rows]))
    return (patched[1:] - patched[0]).float()


@register_method(
    PathPatchingConfig.method_name,
    config=PathPatchingConfig,
    description="Path patching: each sender's effect through chosen receiver inputs only",
)
def path_patching(
    model: TransformerBridge,
    task: TaskData,
    graph: ComputationalGraph,
    config: PathPatchingConfig,
    progress: ProgressFn | None = None,
) -> ScoreResult:
    """Score each sender's path into the receivers, and each edge into them on its own."""
    if not isinstance(config, PathPatchingConfig):
        raise ConfigError(f"path_patching needs a PathPatchingConfig, not {config!r}")
    started = time.perf_counter()
    receivers = receiver_slots(graph, config.receivers)
    senders = sender_nodes(graph, config.senders, receivers)
    engine = InterventionEngine(
        model, graph, task, config.ablation, config.metric, config.batch_size, config.set_batch
    )
    joint = path_patch_rows(graph, senders, receivers)
    edge_rows = joint.nonzero()[:, 1]  # every sender -> receiver edge, patched alone
    singles = torch.zeros(len(edge_rows), graph.n_edges)
    singles[torch.arange(len(edge_rows)), edge_rows] = 1.0
    rows = torch.cat([torch.zeros(1, graph.n_edges), joint, singles])
    values = torch.zeros(rows.shape[0], dtype=torch.float64)
    chunk = max(config.set_batch, 1) * 4
    for start in range(0, rows.shape[0], chunk):
        values[start : start + chunk] = engine.evaluate(rows[start : start + chunk])
        if progress is not None:
            done = min(start + chunk, rows.shape[0])
            progress(done / rows.shape[0], f"path patching: {done}/{rows.shape[0]} patches")
    effects = (values - values[0]).float()
    node_scores = torch.zeros(graph.n_nodes)
    for i, sender in enumerate(senders):
        node_scores[graph.node_index(sender)] = effects[1 + i]
    edge_scores = torch.zeros(graph.n_edges)
    edge_scores[edge_rows] = effects[1 + len(senders) :]
    return ScoreResult(
        edge_scores=edge_scores,
        method=PathPatchingConfig.method_name,
        params=config.to_dict(),
        n_forward=engine.n_forward,
        n_backward=0,
        seconds=time.perf_counter() - started,
        node_scores=node_scores,
        extra={
            "edge_scores": "single-edge patch effect; 0 for edges outside the receiver set",
            "node_scores": "each sender's joint effect on the receiver set",
            "receivers": [n if r is None else f"{n}<{r.value}>" for n, r in receivers],
            "senders": senders,
            "unpatched_metric": float(values[0]),
            "corruption": task.corruption,
        },
    )
