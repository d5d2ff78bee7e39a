"""Positions a positional run scores: token indices, or named spans aligned across prompts.

A positional circuit resolves every edge by position (``workers/graph.py``'s positional
edges). Position ``t`` only means the same thing in every prompt when all prompts share one
template; otherwise, as PEAP (Haklay et al., ACL 2025) argues with its "dataset schema",
positions must be named: IOI's S1, IO, S2 and END, induction's A-first, B-first and
A-second. A task names them per prompt (``TokenSpans``); a ``PositionMap`` says which
position label each token of each prompt counts towards, so scores and patches at a label
align prompts of different lengths by span, not by index.

Every token counts towards exactly one label: in ``spans`` mode the tokens of no named span
count towards ``other``, so a positional run's scores always sum to the unpositioned ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from circuitreg.workers.tasks.base import TaskData

OTHER_SPAN = "other"
PositionMode = Literal["index", "spans"]
POSITION_MODES: tuple[PositionMode, ...] = ("index", "spans")


class PositionError(ValueError):
    """Spans or a position mode that cannot be used; the message says why."""


@dataclass(frozen=True)
class TokenSpans:
    """Named spans of each prompt: ``names`` and, per prompt and token, the number of the
    span it belongs to (``index`` ``[N, T]`` long, -1 for a token in no named span).

    Every named span must cover at least one token of every prompt: a prompt without S2 has
    nothing to align at S2, and silently scoring it 0 there would bias the span's scores.
    """

    names: tuple[str, ...]
    index: torch.Tensor

    def __post_init__(self) -> None:
        if not self.names:
            raise PositionError("spans need at least one name")
        if len(set(self.names)) != len(self.names):
            raise PositionError(f"span names repeat: {list(self.names)}")
        for name in self.names:
            if not name or name == OTHER_SPAN or name.isdigit():
                raise PositionError(
                    f"span name {name!r} is reserved or empty (not '', {OTHER_SPAN!r} or a number)"
                )
        if self.index.ndim != 2 or self.index.dtype != torch.long:
            raise PositionError("span index must be a long [N, T] tensor")
        if self.index.numel() and (
            int(self.index.min()) < -1 or int(self.index.max()) >= len(self.names)
        ):
            raise PositionError(f"span index values must lie in -1..{len(self.names) - 1}")
        for number, name in enumerate(self.names):
            present = (self.index == number).any(dim=1)
            if not bool(present.all()):
                prompt = int((~present).nonzero()[0, 0])
                raise PositionError(f"span {name!r} covers no token of prompt {prompt}")

    def check_shape(self, n_examples: int, seq_len: int) -> None:
        """Raise unless the spans cover ``n_examples`` prompts of ``seq_len`` tokens."""
        if tuple(self.index.shape) != (n_examples, seq_len):
            raise PositionError(
                f"spans are {tuple(self.index.shape)} but the prompts are ({n_examples}, {seq_len})"
            )

    def subset(self, index: torch.Tensor | slice) -> TokenSpans:
        """The spans of some prompts."""
        return TokenSpans(self.names, self.index[index])

    def to(self, device: torch.device | str) -> TokenSpans:
        """The same spans on ``device``."""
        return TokenSpans(self.names, self.index.to(device))

    def shared_index(self, number: int) -> int | None:
        """The token index of span ``number`` where it is one token at the same index in
        every prompt, else None."""
        hits = (self.index == number).nonzero()
        counts = torch.bincount(hits[:, 0], minlength=self.index.shape[0])
        if hits.numel() == 0 or bool((counts != 1).any()):
            return None
        columns = hits[:, 1]
        return int(columns[0]) if bool((columns == columns[0]).all()) else None


@dataclass(frozen=True)
class PositionMap:
    """The labels a positional run scores at, and which label each prompt token counts towards.

    ``labels`` are ``"0".."T-1"`` (``index``) or the task's span names plus ``other``
    (``spans``); ``indices`` is each label's token index where every prompt has it at the
    same one (always, for ``index``), else None. ``assign(task)`` gives, for any batch of
    the task, each token's label number ``[N, T]``.
    """

    mode: PositionMode
    labels: tuple[str, ...]
    indices: tuple[int | None, ...]

    @property
    def size(self) -> int:
        """Number of positions scored (``Q``): T, or the spans plus ``other``."""
        return len(self.labels)

    @classmethod
    def for_task(cls, task: TaskData, mode: str) -> PositionMap:
        """The map of ``task``'s positions in ``mode`` (``index`` or ``spans``)."""
        if mode == "index":
            t = task.seq_len
            return cls("index", tuple(str(i) for i in range(t)), tuple(range(t)))
        if mode != "spans":
            raise PositionError(f"unknown position mode {mode!r}; expected one of {POSITION_MODES}")
        if task.spans is None:
            raise PositionError(
                f"task {task.name!r} names no spans; use positions=index or a task with spans"
            )
        spans = task.spans
        indices = tuple(spans.shared_index(i) for i in range(len(spans.names)))
        return cls("spans", (*spans.names, OTHER_SPAN), (*indices, None))

    def assign(self, task: TaskData) -> torch.Tensor:
        """Each token's label number ``[N, T]`` (long, on the task's device)."""
        n, t = task.n_examples, task.seq_len
        if self.mode == "index":
            if t != self.size:
                raise PositionError(f"the map has {self.size} positions but prompts have {t}")
            return torch.arange(t, device=task.device).expand(n, t)
        if task.spans is None or task.spans.names != self.labels[:-1]:
            raise PositionError(f"task {task.name!r} does not have the spans {self.labels[:-1]}")
        index = task.spans.index.to(task.device)
        return torch.where(index < 0, torch.full_like(index, self.size - 1), index)

    def one_hot(self, task: TaskData, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``[N, T, Q]``: 1 where a token counts towards a label (each token exactly once)."""
        return torch.nn.functional.one_hot(self.assign(task), self.size).to(dtype)
