"""A tiny model with a planted path, and a task that depends on it (validation tests).

Two heads write to the residual stream, ``a0.h1`` and ``a1.h2``; every other head's output
weights are zero, so whatever reaches them is invisible downstream. The true circuit is then
every edge among ``input``, the two planted heads and ``logits``, and nothing outside it can
change the output. The task's answer is the model's own clean prediction and the distractor
its prediction on the corrupted prompt, so the behaviour is large and defined by the model.
"""

from __future__ import annotations

import torch
from transformer_lens.model_bridge import TransformerBridge

from circuitreg.schema import (
    CircuitDocument,
    Component,
    Edge,
    MethodRef,
    ModelRef,
    TaskRef,
)
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.tasks.base import TaskData

N_LAYERS, N_HEADS, D_HEAD, D_VOCAB = 2, 4, 16, 50
PLANTED = ("a0.h1", "a1.h2")
IDLE_HEAD = "a0.h3"  # outputs nothing: a component that can only be redundant
SCALE = 30.0  # planted heads dominate the direct path from the embeddings


def planted_model(seed: int = 0, backup: str | None = None) -> TransformerBridge:
    """A 2-layer attention-only model where only the planted heads write anything.

    ``backup`` names a layer-0 head made an exact copy of ``a0.h1`` (a backup head): the model
    then has two routes where a circuit holding only ``a0.h1`` has one.
    """
    model = TransformerBridge.boot_native(
        dict(
            n_layers=N_LAYERS,
            d_model=64,
            n_heads=N_HEADS,
            d_head=D_HEAD,
            d_vocab=D_VOCAB,
            n_ctx=32,
            attn_only=True,
            act_fn="gelu",
            normalization_type=None,
            seed=seed,
        )
    )
    with torch.no_grad():
        for layer in range(N_LAYERS):
            out = model.blocks[layer].attn.o.original_component.weight  # [d_model, H*d_head]
            for head in range(N_HEADS):
                cols = slice(head * D_HEAD, (head + 1) * D_HEAD)
                if f"a{layer}.h{head}" in PLANTED:
                    out[:, cols] *= SCALE
                else:
                    out[:, cols] = 0.0
        if backup is not None:
            attn = model.blocks[0].attn
            src, dst = _head_slice(1), _head_slice(int(backup.split(".h")[1]))
            for proj in (attn.q, attn.k, attn.v):
                proj.original_component.weight[dst] = proj.original_component.weight[src]
                proj.original_component.bias[dst] = proj.original_component.bias[src]
            attn.o.original_component.weight[:, dst] = attn.o.original_component.weight[:, src]
    return model


def _head_slice(head: int) -> slice:
    return slice(head * D_HEAD, (head + 1) * D_HEAD)


def planted_task(model: TransformerBridge, n: int = 24, seq_len: int = 10) -> TaskData:
    """Random prompts; the answer is the clean prediction, the distractor the corrupted one."""
    generator = torch.Generator().manual_seed(1)
    clean = torch.randint(D_VOCAB, (n, seq_len), generator=generator)
    corrupted = torch.randint(D_VOCAB, (n, seq_len), generator=generator)
    positions = torch.full((n, 1), seq_len - 1)
    with torch.no_grad():
        clean_logits = model(clean)[:, -1]
        corrupted_logits = model(corrupted)[:, -1]
    answers = clean_logits.argmax(-1)
    distractors = corrupted_logits.argmax(-1)
    # where both runs predict the same token, the clean run's runner-up is the distractor
    same = distractors == answers
    distractors[same] = clean_logits[same].topk(2, dim=-1).indices[:, 1]
    return TaskData(
        name="planted",
        spec={"n": n, "seq_len": seq_len},
        clean=clean,
        corrupted=corrupted,
        positions=positions,
        answers=answers[:, None],
        distractors=distractors[:, None],
        corruption="independent random prompts",
    )


def true_edges(graph: ComputationalGraph, extra: tuple[str, ...] = ()) -> list[str]:
    """Every edge among input, the planted heads (and ``extra`` heads) and logits."""
    nodes = {"input", "logits", *PLANTED, *extra}
    return [
        e
        for e in graph.edges
        if e.split("->")[0] in nodes and e.split("->")[1].split("<")[0] in nodes
    ]


def circuit_document(
    graph: ComputationalGraph,
    in_circuit: list[str],
    scores: dict[str, float] | None = None,
) -> CircuitDocument:
    """A document over every edge of ``graph`` with ``in_circuit`` flagged."""
    chosen = set(in_circuit)
    edges = tuple(
        Edge.from_name(e, in_circuit=e in chosen, score=None if scores is None else scores[e])
        for e in graph.edges
    )
    touched = {p for e in chosen for p in (e.split("->")[0], e.split("->")[1].split("<")[0])}
    return CircuitDocument(
        model=ModelRef(name="planted", n_layers=N_LAYERS, n_heads=N_HEADS, attn_only=True),
        task=TaskRef(name="planted", corruption="independent random prompts"),
        method=MethodRef(name="hand"),
        components=tuple(Component.from_name(n, in_circuit=n in touched) for n in graph.nodes),
        edges=edges,
    )
