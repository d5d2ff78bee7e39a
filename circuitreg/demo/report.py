"""What the demo prints: the API's answer, read back and checked.

The exit status is 0 only when the answer names the heads head_detector found, contains the
K-composition edge between them, and, where checkpoints lie on both sides of the phase
change, the edge is shared by every circuit after it and by none before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import typer


@dataclass(frozen=True)
class StoredCheckpoint:
    """What the demo stored for one checkpoint."""

    step: int
    circuit_id: str
    faithfulness: float | None
    has_induction_edge: bool
    gap: float | None = None  # the clean-ablated gap faithfulness was normalised by
    undefined: str | None = None  # why faithfulness is undefined (the gap is noise)


@dataclass(frozen=True)
class PhaseWindow:
    """Steps where the repeated-half loss starts falling, and where it has mostly fallen."""

    start: int | None
    end: int | None


def phase_window(
    losses: Sequence[tuple[int, float]], start_fraction: float = 0.9, end_fraction: float = 0.1
) -> PhaseWindow:
    """The induction phase change read off the loss curve of the repeated half.

    It starts at the first step where the loss (averaged over 10 steps) falls below
    ``start_fraction`` of its initial value and ends where it falls below ``end_fraction``:
    the previous-token -> induction-head mechanism exists only once the loss has dropped.
    """
    if not losses:
        return PhaseWindow(None, None)
    initial = sum(v for _, v in losses[:10]) / len(losses[:10])
    start = end = None
    for i, (step, _) in enumerate(losses):
        window = [v for _, v in losses[max(0, i - 9) : i + 1]]
        mean = sum(window) / len(window)
        if start is None and mean < start_fraction * initial:
            start = step
        if end is None and mean < end_fraction * initial:
            end = step
            break
    return PhaseWindow(start, end)


def report(
    answer: dict[str, Any],
    stored: list[StoredCheckpoint],
    heads: tuple[str, str],
    k_edge: str,
    window: PhaseWindow,
    seconds: float,
) -> int:
    """Print the answer; return the demo's exit status."""
    prev_head, ind_head = heads
    circuit = answer["circuit"]
    components = {e["node"]["name"]: e["node"] for e in circuit["components"]["edges"]}
    edges = {e["node"]["name"]: e["node"] for e in circuit["edges"]["edges"]}
    typer.echo("")
    typer.echo(
        f"GraphQL answer for circuit {circuit['id']} ({circuit['modelName']} "
        f"{circuit['checkpoint']}, {circuit['method']}, {circuit['nEdges']} edges, "
        f"faithfulness {circuit['faithfulness']:.3f}):"
    )
    for head in heads:
        comp = components.get(head)
        if comp is None:
            typer.echo(f"  {head}: NOT in the circuit")
        else:
            typer.echo(
                f"  {head} (layer {comp['layer']}, head {comp['head']}, hook "
                f"{comp['hookName']}): labels {comp['labels']}"
            )
    edge = edges.get(k_edge)
    if edge is None:
        typer.echo(f"  K-composition edge {k_edge}: NOT found by the method")
    else:
        typer.echo(f"  K-composition edge {edge['name']}: score {edge['score']:.4f}")
    _print_evolution(answer, stored, k_edge)
    shared_ok = _print_shared(answer, k_edge, window)
    typer.echo(f"demo finished in {seconds:.0f} s")
    ok = prev_head in components and ind_head in components and edge is not None
    return 0 if ok and shared_ok else 1


def _print_evolution(answer: dict[str, Any], stored: list[StoredCheckpoint], k_edge: str) -> None:
    steps = [e["node"] for e in answer["circuitEvolution"]["steps"]["edges"]]
    by_step = {item.step: item for item in stored}
    typer.echo(f"{k_edge} across training (circuitEvolution):")
    for node in steps:
        present = "yes" if k_edge in node["edges"] else "no "
        item = by_step.get(node["step"])
        typer.echo(f"  {node['checkpoint']:>9}: in circuit {present}  {_faithfulness_cell(item)}")
    undefined = [item for item in stored if item.undefined]
    if undefined:
        typer.echo(
            f"  undefined: {undefined[0].undefined}"
            + (f" (and {len(undefined) - 1} more checkpoints)" if len(undefined) > 1 else "")
        )
    formed = formed_at(steps, k_edge)
    if formed is not None:
        typer.echo(f"the K-composition edge is in every circuit from {formed} on")


def _faithfulness_cell(item: StoredCheckpoint | None) -> str:
    """``faithfulness 0.794  gap 1.52``, or ``undefined`` where the gap is noise."""
    if item is None or (item.faithfulness is None and item.undefined is None):
        return "faithfulness n/a"
    gap = "" if item.gap is None else f"  gap {item.gap:7.3f}"
    if item.undefined is not None:
        return f"faithfulness undefined{gap}"
    assert item.faithfulness is not None
    return f"faithfulness {item.faithfulness:9.3f}{gap}"


def _print_shared(answer: dict[str, Any], k_edge: str, window: PhaseWindow) -> bool:
    """Report sharedSubcircuits around the phase change; False if the edge is misplaced."""
    typer.echo(f"induction phase change (repeated-half loss): steps {window.start}-{window.end}")
    if "afterPhaseChange" not in answer:
        typer.echo("  (no checkpoints on both sides of the phase change: shared query skipped)")
        return True
    after, before = answer["afterPhaseChange"], answer["beforePhaseChange"]
    after_edges = {e["node"]["edge"] for e in after["edges"]["edges"]}
    before_edges = {e["node"]["edge"] for e in before["edges"]["edges"]}
    in_after, in_before = k_edge in after_edges, k_edge in before_edges
    typer.echo(
        f"  sharedSubcircuits over the {len(after['circuitIds'])} circuits after it: "
        f"{len(after_edges)} edges in all of them; {k_edge} among them: "
        f"{'yes' if in_after else 'no'}"
    )
    typer.echo(
        f"  sharedSubcircuits over the {len(before['circuitIds'])} circuits before it: "
        f"{len(before_edges)} edges in any of them; {k_edge} among them: "
        f"{'yes' if in_before else 'no'}"
    )
    return in_after and not in_before


def formed_at(steps: list[dict[str, Any]], edge: str) -> str | None:
    """The first checkpoint from which ``edge`` stays in the circuit to the end of training."""
    formed: str | None = None
    for node in steps:
        formed = (formed or node["checkpoint"]) if edge in node["edges"] else None
    return formed
