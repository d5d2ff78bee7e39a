"""Edges a compiled program reads but whose removal never changes its output.

The weight test in ``groundtruth`` says a component *reads* a direction; reading is not the
same as depending. tracr compiles reads that carry nothing: a ``Select(..., TRUE)`` (every key
selected, as in ``make_length``'s ``SelectorWidth``) scores every key alike, so knocking out
its head's query or key input changes no logit at all on ``reverse`` (softmax ignores a score
shared by every key; checked with TransformerLens hooks in test_tracr_groundtruth.py).
Counting such edges as true would grade every method on edges no intervention can see.

So each weight-read edge is knocked out alone, exactly (``circuitreg.workers.engine``: the
edge's receiver gets the ablated value of its source, everything downstream recomputed), on
every one of the fixture's reference inputs, once with zero ablation and once resampling the
source from another reference input of the same length (with ``length``, only the inputs of
that length: a task's prompts have one). An edge whose knock-out leaves every read position's
logits unchanged (up to float32 rounding) in both is not a real edge. The test
is single-edge, so two edges that back each other up would both be dropped; tracr compiles
each RASP operation once, so its programs have no such redundancy.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from circuitreg.workers.tracr.fixture import TracrFixture, TracrFixtureError, build_bridge

# Logit change (relative to the largest logit on the inputs) below which a knock-out counts as
# having no effect: tracr's blocks are exact, this only absorbs float32 rounding.
RELATIVE_TOLERANCE = 1e-4


def dead_edges(fixture: TracrFixture, edges: list[str], length: int | None = None) -> set[str]:
    """The edges among ``edges`` whose knock-out never changes a read position's logits
    (on the reference samples of ``length`` tokens only, when it is given)."""
    from circuitreg.workers.ablation import ablated_outputs
    from circuitreg.workers.engine.forward import embed, run_forward
    from circuitreg.workers.engine.weights import read_weights
    from circuitreg.workers.graph import ComputationalGraph

    bridge = build_bridge(fixture)
    weights = read_weights(bridge)
    graph = ComputationalGraph.from_model(bridge)
    index = {name: i for i, name in enumerate(graph.edges)}
    patch = torch.zeros(len(edges), graph.n_edges)
    for row, name in enumerate(edges):
        patch[row, index[name]] = 1.0
    by_length: dict[int, list[torch.Tensor]] = defaultdict(list)
    for sample in fixture.samples:
        if length is not None and len(sample.inputs) != length:
            continue
        by_length[len(sample.inputs)].append(fixture.encode(sample.inputs))
    if length is not None and not by_length:
        # No input to knock edges out on would make every edge look dead: an empty truth.
        lengths = sorted({len(s.inputs) for s in fixture.samples})
        raise TracrFixtureError(
            f"tracr program {fixture.name!r} has no reference inputs of length {length} "
            f"(its lengths: {lengths})"
        )
    effect = torch.zeros(len(edges))
    scale = 0.0
    with torch.no_grad():
        for size, prompts in by_length.items():
            tokens = torch.stack(prompts)
            defined = fixture.defined_positions(size)
            if not defined:
                continue
            positions = torch.tensor(defined).expand(tokens.shape[0], -1)
            embedded = embed(weights, tokens)

            def outputs(t: torch.Tensor) -> torch.Tensor:
                first = torch.zeros(t.shape[0], 1, dtype=torch.long)
                run = run_forward(weights, graph, embed(weights, t), first, record=True)
                assert run.writer_outputs is not None
                return run.writer_outputs[0]

            clean_out = outputs(tokens)
            clean = run_forward(weights, graph, embedded, positions).logits[0]
            scale = max(scale, float(clean.abs().max()))
            zero = ablated_outputs("zero", outputs, tokens, clean_out, None)
            resampled = ablated_outputs("resample", outputs, tokens.roll(1, 0), clean_out, None)
            for ablated in (zero, resampled):
                logits = run_forward(
                    weights, graph, embedded, positions, patch=patch, ablated=ablated
                ).logits  # [E, N, P, V]
                change = (logits - clean).abs().flatten(1).amax(1)
                effect = torch.maximum(effect, change)
    return {name for name, e in zip(edges, effect.tolist(), strict=True)
            if e <= RELATIVE_TOLERANCE * max(scale, 1.0)}  # fmt: skip
