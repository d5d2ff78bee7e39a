"""The suffix-vector ablation check: how far the output moves when the circuit's heads go.

Every attention head the circuit touches is knocked out at once (every edge leaving it
carries its ablated value: the corrupted run's output for resample ablation, zeros or the
dataset mean), and the change of the logit vector at each read position is measured as an
L2 norm over the vocabulary:

    change(example) = mean over read positions of || logits(heads ablated) - logits(clean) ||_2

The row reports its mean over the prompts with the standard error of that mean. On its own
the number has no scale, so beside it stands the same measurement for random control sets of
as many heads drawn from the heads outside the circuit (``ValidationConfig.n_random`` draws,
seeded by ``ValidationConfig.seed``; each prompt's change is averaged over the draws before
the mean and standard error over prompts are taken). The check passes when ablating the
circuit's heads moves the logits further than ablating the control heads.

Defined edge cases: a circuit with no attention heads (only ``input``, MLPs and ``logits``)
has nothing to ablate, so both changes are 0 by definition and ``passed`` is None, with a
note saying so; a circuit holding so many heads that fewer than as many are left outside it
has no control (``control`` None, ``passed`` None, with a note). All the ablated sets and an
unpatched row, to compare with, run in one stacked evaluation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from circuitreg.schema import ValidationResult
from circuitreg.schema.names import ComponentKind, parse_node
from circuitreg.services.analysis.results import SUFFIX_ABLATION
from circuitreg.workers.engine import InterventionEngine
from circuitreg.workers.graph import GraphError

from .base import ValidationConfig, ValidationError
from .circuit import inner_components, knockout_mask

if TYPE_CHECKING:
    from .api import EngineEvaluator


def circuit_heads(evaluator: EngineEvaluator, mask: torch.Tensor) -> list[str]:
    """The attention heads the circuit's edges touch, in graph order."""
    return [n for n in inner_components(evaluator.graph, mask) if _is_head(n)]


def logit_changes(evaluator: EngineEvaluator, head_sets: list[list[str]]) -> torch.Tensor:
    """``[S, N]``: per head set and prompt, the mean over read positions of the L2 norm of
    the change of the logits when every head of the set is knocked out together."""
    graph, engine = evaluator.graph, evaluator.engine
    clean_row = torch.zeros(graph.n_edges)
    rows = [clean_row] + [(~knockout_mask(graph, heads)).float() for heads in head_sets]
    patch = torch.stack(rows)
    evaluator.n_evaluations += 1
    columns = []
    with torch.no_grad():
        for batch in engine.batches():
            logits = engine.run(batch, patch).double()  # [1 + S, N, P, V]
            change = torch.linalg.vector_norm(logits[1:] - logits[:1], dim=-1)  # [S, N, P]
            columns.append(change.mean(-1).cpu())
    return torch.cat(columns, dim=-1)


def suffix_ablation(
    evaluator: EngineEvaluator, mask: torch.Tensor, config: ValidationConfig
) -> ValidationResult:
    """The suffix-vector ablation row for the circuit ``mask`` (see the module docstring).

    ``values``: ``circuit`` and ``control`` (each ``mean`` and ``standard_error`` of the
    logit change over prompts, ``heads``/``draws`` naming what was ablated), ``ratio``
    (circuit / control), ``n_heads``, ``n_prompts``, ``note`` and ``config``. Raises
    ``ValidationError`` for an evaluator without an intervention engine, or a mask of the
    wrong length or with no edges.
    """
    mask = _checked_mask(evaluator, mask)
    heads = circuit_heads(evaluator, mask)
    values: dict[str, Any] = {
        "n_heads": len(heads),
        "n_prompts": evaluator.engine.task.n_examples,
    }
    if not heads:
        return _result(evaluator, config, values | _nothing_ablated(), None)
    draws = _control_draws(evaluator, heads, config)
    changes = logit_changes(evaluator, [heads, *draws])  # [1 + draws, N]
    circuit = {**_spread(changes[0]), "heads": heads}
    if not draws:
        values |= {
            "circuit": circuit,
            "control": None,
            "ratio": None,
            "note": f"{_count(len(_outside(evaluator, heads)))} outside the circuit's "
            f"{len(heads)}: there is no control set of as many",
        }
        return _result(evaluator, config, values, None)
    control = _control(changes[1:], draws)
    values |= {
        "circuit": circuit,
        "control": control,
        "ratio": circuit["mean"] / control["mean"] if control["mean"] > 0 else None,
        "note": f"L2 norm of the logit change at the read positions: {evaluator.ablation} "
        f"ablation of the circuit's {len(heads)} heads vs {len(draws)} random sets of as "
        "many other heads",
    }
    return _result(evaluator, config, values, circuit["mean"] > control["mean"])


def _checked_mask(evaluator: EngineEvaluator, mask: torch.Tensor) -> torch.Tensor:
    """``mask`` as a boolean CPU vector, once the check can run on it at all.

    The check reads the logits, which only an intervention engine gives, and ablates the
    heads of a circuit, so it needs one mask of the graph's edges with at least one edge.
    """
    if not isinstance(getattr(evaluator, "engine", None), InterventionEngine):
        raise ValidationError(
            "suffix ablation reads the logits, not the metric: it needs an EngineEvaluator "
            f"(one with an intervention engine), got {type(evaluator).__name__}"
        )
    mask = torch.as_tensor(mask)
    try:
        evaluator.graph.check_edge_vector(mask)
    except GraphError as exc:
        raise ValidationError(f"suffix ablation: {exc}") from None
    if mask.ndim != 1:
        raise ValidationError(
            f"suffix ablation: expected one mask [n_edges], got shape {tuple(mask.shape)}"
        )
    mask = mask.bool().cpu()
    if not bool(mask.any()):
        raise ValidationError(
            "suffix ablation: the circuit has no edges; there is nothing to ablate"
        )
    return mask


def _nothing_ablated() -> dict[str, Any]:
    """The values of a circuit without attention heads: both changes are 0 by definition."""
    zero = {"mean": 0.0, "standard_error": 0.0}
    return {
        "circuit": {**zero, "heads": []},
        "control": {**zero, "draws": []},
        "ratio": None,
        "note": "the circuit has no attention heads: nothing is ablated, so both changes "
        "are 0 by definition",
    }


def _control(changes: torch.Tensor, draws: list[list[str]]) -> dict[str, Any]:
    """The control's spread over prompts (each prompt's change averaged over the draws
    first, so the error is over prompts as the circuit's is) and each draw's own mean."""
    per_draw = [float(c.mean()) for c in changes]
    return {
        **_spread(changes.mean(0)),
        "draws": [{"heads": d, "mean": m} for d, m in zip(draws, per_draw, strict=True)],
    }


def _outside(evaluator: EngineEvaluator, heads: list[str]) -> list[str]:
    """The graph's heads that are not in ``heads``, in graph order."""
    inside = set(heads)
    return [n for n in evaluator.graph.writers if _is_head(n) and n not in inside]


def _control_draws(
    evaluator: EngineEvaluator, heads: list[str], config: ValidationConfig
) -> list[list[str]]:
    """``config.n_random`` seeded sets of ``len(heads)`` heads from outside the circuit
    (none when too few heads lie outside it)."""
    pool = _outside(evaluator, heads)
    if len(pool) < len(heads):
        return []
    generator = torch.Generator().manual_seed(config.seed)
    draws = []
    for _ in range(config.n_random):
        chosen = torch.randperm(len(pool), generator=generator)[: len(heads)].tolist()
        draws.append([pool[i] for i in sorted(chosen)])
    return draws


def _count(n: int) -> str:
    """How many heads lie outside the circuit, as the no-control note says it."""
    return "no head lies" if n == 0 else "only 1 head lies" if n == 1 else f"only {n} heads lie"


def _is_head(name: str) -> bool:
    """Only attention heads are ablated: the suffix vector is what the heads write."""
    return parse_node(name).kind == ComponentKind.ATTN_HEAD


def _spread(per_prompt: torch.Tensor) -> dict[str, Any]:
    """Mean over prompts and its standard error (None with one prompt: no spread)."""
    n = int(per_prompt.numel())
    mean = float(per_prompt.mean())
    error = float(per_prompt.std(unbiased=True)) / n**0.5 if n > 1 else None
    return {"mean": mean, "standard_error": error}


def _result(
    evaluator: EngineEvaluator,
    config: ValidationConfig,
    values: dict[str, Any],
    passed: bool | None,
) -> ValidationResult:
    """The row, with the config it ran under recorded beside its values."""
    return ValidationResult(
        name=SUFFIX_ABLATION,
        ablation=evaluator.ablation,
        metric=evaluator.metric_name,
        corruption=evaluator.corruption,
        values={**values, "config": config.to_dict()},
        passed=passed,
    )
