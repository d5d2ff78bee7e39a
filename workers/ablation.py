"""What a patched edge carries instead of its clean value.

- ``resample``: the writer's output on the task's corrupted prompt (interchange ablation;
  what the task's corruption hides or reveals is therefore part of the result).
- ``zero``: nothing; the edge is cut.
- ``mean``: the writer's output averaged over the task's clean prompts, position by position
  (token-wise), so positional structure survives but the prompt's content does not.

Every function returns writer outputs ``[N|1, T, W, d]`` in ``graph.writers`` order: one row
per example for ``resample``, one row broadcast over examples for ``zero`` and ``mean``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal, cast

import torch

AblationKind = Literal["resample", "zero", "mean"]
ABLATIONS: tuple[AblationKind, ...] = ("resample", "zero", "mean")

# Runs the unpatched model on tokens and returns its writer outputs [N, T, W, d].
WriterRun = Callable[[torch.Tensor], torch.Tensor]


class AblationError(ValueError):
    """An unknown ablation kind."""


def check_ablation(kind: str) -> AblationKind:
    """The ablation kind, or ``AblationError`` listing the valid ones."""
    if kind not in ABLATIONS:
        raise AblationError(f"unknown ablation {kind!r}; choose one of {', '.join(ABLATIONS)}")
    return cast(AblationKind, kind)


def dataset_mean(run: WriterRun, token_batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """Token-wise mean of the writer outputs over all clean prompts, ``[1, T, W, d]``."""
    total: torch.Tensor | None = None
    count = 0
    for tokens in token_batches:
        outputs = run(tokens)
        batch_sum = outputs.sum(0, keepdim=True)
        total = batch_sum if total is None else total + batch_sum
        count += outputs.shape[0]
    if total is None or count == 0:
        raise AblationError("mean ablation needs at least one prompt")
    return total / count


def ablated_outputs(
    kind: AblationKind,
    run: WriterRun,
    corrupted_tokens: torch.Tensor,
    clean_outputs: torch.Tensor,
    mean: torch.Tensor | None = None,
) -> torch.Tensor:
    """Writer outputs to patch in for one batch of examples."""
    if kind == "resample":
        return run(corrupted_tokens)
    if kind == "zero":
        return torch.zeros_like(clean_outputs[:1])
    if mean is None:
        raise AblationError("mean ablation needs the dataset mean (see dataset_mean)")
    return mean
