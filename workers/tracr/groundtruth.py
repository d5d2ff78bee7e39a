"""The true edge set of a compiled tracr program, read off its weight matrices.

tracr gives every RASP variable its own block of residual-stream dimensions, so a component
reads a variable exactly when its input weights are non-zero on that variable's block. An edge
``src -> dst<x>`` is therefore real when what ``src`` writes overlaps what ``dst`` reads
through input ``x``: the product of the writer's output matrix and the reader's input matrix
is non-zero. Writers: ``input`` (token and position embeddings), a head (its OV matrix
``W_V W_O``), an MLP (its output weights). Readers: a head's query and key (through the QK
bilinear form ``W_Q W_K^T``, so a direction counts only if the other side can match it), its
value (through ``W_V W_O``), an MLP (input weights of hidden units that have output weights),
and the logits (the unembedding). Heads and MLPs whose weights are all zero take part in no
edge. A read whose removal never changes the output (a query or key read of a
``Select(..., TRUE)``, as in ``make_length``, scores every key alike) is not a real edge
either: ``invariance`` knocks each edge out alone on the program's reference inputs. Finally
edges that lie on no ``input -> logits`` path are dropped: they cannot affect
the output, so no faithful circuit contains them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from circuitreg.schema.names import INPUT, LOGITS, edge_name, head_name, mlp_name, node_order_key
from circuitreg.workers.tracr.fixture import TracrFixture
from circuitreg.workers.tracr.invariance import dead_edges

# Relative size below which a weight product counts as zero. tracr's blocks are disjoint, so
# unrelated products are exactly zero; this only absorbs float32 rounding.
RELATIVE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class _Reader:
    node: str
    receiver: str | None
    matrix: torch.Tensor  # [d_model, k]: reads x @ matrix


def _nonzero(write: torch.Tensor, read: torch.Tensor) -> bool:
    if write.numel() == 0 or read.numel() == 0:
        return False
    scale = float(write.abs().max()) * float(read.abs().max())
    if scale == 0.0:
        return False
    return float((write @ read).abs().max()) > RELATIVE_TOLERANCE * scale


def _components(
    weights: dict[str, torch.Tensor], n_layers: int, n_heads: int, d_head: int
) -> tuple[list[tuple[str, torch.Tensor]], list[_Reader]]:
    """Writers as (node, [k, d_model] output rows) and readers, in model order."""
    writers: list[tuple[str, torch.Tensor]] = [
        (INPUT, torch.cat([weights["tok_embed.weight"], weights["pos.weight"]], dim=0))
    ]
    readers: list[_Reader] = []
    for layer in range(n_layers):
        prefix = f"layers.{layer}"
        for head in range(n_heads):
            rows = slice(head * d_head, (head + 1) * d_head)
            w_q = weights[f"{prefix}.attn.q.weight"][rows].T  # [d_model, d_head]
            w_k = weights[f"{prefix}.attn.k.weight"][rows].T
            w_v = weights[f"{prefix}.attn.v.weight"][rows].T
            w_o = weights[f"{prefix}.attn.o.weight"][:, rows].T  # [d_head, d_model]
            name = head_name(layer, head)
            w_qk, w_ov = w_q @ w_k.T, w_v @ w_o
            readers += [
                _Reader(name, "q", w_qk),
                _Reader(name, "k", w_qk.T),
                _Reader(name, "v", w_ov),
            ]
            writers.append((name, w_ov))
        w_in = weights[f"{prefix}.mlp.fc_in.weight"]  # [d_mlp, d_model]
        w_out = weights[f"{prefix}.mlp.fc_out.weight"]  # [d_model, d_mlp]
        live = w_out.abs().amax(dim=0) > 0
        readers.append(_Reader(mlp_name(layer), None, w_in[live].T))
        writers.append((mlp_name(layer), w_out[:, live].T))
    readers.append(_Reader(LOGITS, None, weights["head.weight"].T))
    return writers, readers


def _on_input_to_logits_paths(edges: list[tuple[str, str, str | None]]) -> set[int]:
    forward: dict[str, set[str]] = {}
    backward: dict[str, set[str]] = {}
    for src, dst, _ in edges:
        forward.setdefault(src, set()).add(dst)
        backward.setdefault(dst, set()).add(src)

    def reach(start: str, graph: dict[str, set[str]]) -> set[str]:
        seen, stack = {start}, [start]
        while stack:
            for nxt in graph.get(stack.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    from_input, to_logits = reach(INPUT, forward), reach(LOGITS, backward)
    return {i for i, (src, dst, _) in enumerate(edges) if src in from_input and dst in to_logits}


def ground_truth_edges(fixture: TracrFixture, length: int | None = None) -> tuple[str, ...]:
    """Canonical names of the program's real edges, in topological order of their targets.

    With ``length``, the edges real on inputs of that many tokens: a circuit is a task's, and
    a task's prompts have one length. Some computations only matter at other lengths (the
    length of a full-length ``reverse`` input, parts of ``shuffle_dyck``'s): on such prompts
    their edges change no output whatever is patched, so no method is graded on them.
    """
    cfg = fixture.bridge_config
    weights = {k: v.float() for k, v in fixture.state_dict().items()}
    writers, readers = _components(
        weights, int(cfg["n_layers"]), int(cfg["n_heads"]), int(cfg["d_head"])
    )
    candidates: list[tuple[str, str, str | None]] = []
    for reader in readers:
        for source, write in writers:
            if node_order_key(source) >= node_order_key(reader.node):
                continue
            if _nonzero(write, reader.matrix):
                candidates.append((source, reader.node, reader.receiver))
    names = [edge_name(*c) for c in candidates]
    invariant = dead_edges(fixture, names, length)
    candidates = [c for c, name in zip(candidates, names, strict=True) if name not in invariant]
    keep = _on_input_to_logits_paths(candidates)
    return tuple(edge_name(*candidates[i]) for i in sorted(keep))


def ground_truth_nodes(fixture: TracrFixture) -> tuple[str, ...]:
    """Nodes that take part in at least one real edge, in topological order."""
    names: set[str] = set()
    for edge in ground_truth_edges(fixture):
        source, _, rest = edge.partition("->")
        names.update((source, rest.split("<")[0]))
    return tuple(sorted(names, key=node_order_key))
