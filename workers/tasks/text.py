"""Turning text prompt pairs into a ``TaskData``: tokenise, check, right-pad.

Shared by the JSONL task and the IOI, greater-than and docstring generators. The model's
BOS is prepended as ``prepend_bos`` says (``auto``: unless the prompt starts with it).
Every problem is reported with the example's index: a clean/corrupted pair that tokenises
to different lengths (positions would not align), an answer that is not exactly one token,
a tokenizer missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from circuitreg.workers.tasks.base import TaskContext, TaskData, TaskError
from circuitreg.workers.tasks.prompt_spans import span_index


@dataclass(frozen=True)
class PromptPair:
    """One example: clean and corrupted prompts (text or ids), answer and distractor."""

    clean: str | Sequence[int]
    corrupted: str | Sequence[int]
    answer: str | int
    distractor: str | int | None = None
    # Named token ranges of the clean prompt, ``[start, end)`` before any added BOS
    # (``prompt_spans.py``), for positional runs that align prompts by span.
    spans: Mapping[str, tuple[int, int]] | None = None
    # Where the example came from (``pairs.jsonl:3``), named in every error about it.
    origin: str | None = None


def require_tokenizer(context: TaskContext, task: str) -> Any:
    """The tokenizer, or a clear error for tasks that need one."""
    if context.tokenizer is None:
        raise TaskError(
            f"task {task!r} needs a tokenizer (e.g. GPT-2's), but this model has none; "
            "give token ids instead or load a model with a tokenizer"
        )
    return context.tokenizer


def encode(context: TaskContext, text: str | Sequence[int], where: str) -> list[int]:
    """Token ids of a prompt (ids pass through after a range check)."""
    if isinstance(text, str):
        tokenizer = require_tokenizer(context, where)
        ids = list(tokenizer.encode(text, add_special_tokens=False))
    else:
        ids = [int(t) for t in text]
    if not ids:
        raise TaskError(f"{where}: empty prompt")
    bad = [t for t in ids if not 0 <= t < context.d_vocab]
    if bad:
        raise TaskError(
            f"{where}: token ids {bad[:5]} outside the vocabulary 0..{context.d_vocab - 1}"
        )
    return ids


def single_token(context: TaskContext, value: str | int, where: str) -> int:
    """The id of an answer that must be exactly one token."""
    ids = (
        encode(context, value, where) if isinstance(value, str) else encode(context, [value], where)
    )
    if len(ids) != 1:
        raise TaskError(f"{where}: {value!r} is {len(ids)} tokens; an answer must be one token")
    return ids[0]


def is_single_token(context: TaskContext, text: str) -> bool:
    """Whether ``text`` tokenises to exactly one known token."""
    tokenizer = require_tokenizer(context, "task")
    ids = tokenizer.encode(text, add_special_tokens=False)
    unk = getattr(tokenizer, "unk_token_id", None)
    return len(ids) == 1 and ids[0] != unk and ids[0] < context.d_vocab


PrependBos = Literal["auto", "true", "false"]
PREPEND_BOS_CHOICES: tuple[PrependBos, ...] = ("auto", "true", "false")


def _with_bos(ids: list[int], bos: int | None, mode: PrependBos, where: str) -> list[int]:
    """``ids`` with the model's BOS in front as ``mode`` says.

    ``auto`` adds it unless the prompt already starts with it, because prompt files written
    for TransformerLens or auto-circuit often carry their own, and a second BOS silently
    changes every position; ``true`` always adds it, ``false`` never does.
    """
    if mode == "false":
        return ids
    if bos is None:
        if mode == "true":
            raise TaskError(f"{where}: prepend_bos=true, but this model has no BOS token")
        return ids
    if mode == "auto" and ids[0] == bos:
        return ids
    return [bos, *ids]


def build_from_pairs(
    name: str,
    spec: dict[str, Any],
    pairs: Sequence[PromptPair],
    context: TaskContext,
    corruption: str,
    prepend_bos: PrependBos = "auto",
) -> TaskData:
    """Tokenise, check and right-pad prompt pairs; the metric is read at the last token."""
    if not pairs:
        raise TaskError(f"task {name!r} has no examples")
    if prepend_bos not in PREPEND_BOS_CHOICES:
        raise TaskError(f"prepend_bos={prepend_bos!r}: give one of auto, true, false")
    bos = context.bos_token_id
    clean_rows, corrupt_rows, answers, distractors = [], [], [], []
    have_distractors = all(p.distractor is not None for p in pairs)
    bos_added = 0
    raw_lengths, shifts = [], []
    for i, pair in enumerate(pairs):
        where = pair.origin or f"{name} example {i}"
        raw = encode(context, pair.clean, f"{where} clean")
        clean = _with_bos(raw, bos, prepend_bos, f"{where} clean")
        corrupted = _with_bos(
            encode(context, pair.corrupted, f"{where} corrupted"), bos, prepend_bos, where
        )
        bos_added += len(clean) > len(raw)
        raw_lengths.append(len(raw))
        shifts.append(len(clean) - len(raw))
        if len(clean) != len(corrupted):
            raise TaskError(
                f"{where}: clean ({len(clean)} tokens) and corrupted ({len(corrupted)} tokens) "
                "must have the same length so positions align"
            )
        clean_rows.append(clean)
        corrupt_rows.append(corrupted)
        answers.append(single_token(context, pair.answer, f"{where} answer"))
        if have_distractors:
            assert pair.distractor is not None
            distractors.append(single_token(context, pair.distractor, f"{where} distractor"))
    width = max(len(r) for r in clean_rows)
    pad = _pad_id(context)
    lengths = torch.tensor([len(r) for r in clean_rows])
    origins = [p.origin or f"{name} example {i}" for i, p in enumerate(pairs)]
    spans = span_index([p.spans for p in pairs], raw_lengths, shifts, width, name, origins)
    return TaskData(
        name=name,
        spec=spec,
        clean=torch.tensor([r + [pad] * (width - len(r)) for r in clean_rows], dtype=torch.long),
        corrupted=torch.tensor(
            [r + [pad] * (width - len(r)) for r in corrupt_rows], dtype=torch.long
        ),
        positions=(lengths - 1).unsqueeze(1),
        answers=torch.tensor(answers, dtype=torch.long).unsqueeze(1),
        distractors=torch.tensor(distractors, dtype=torch.long).unsqueeze(1)
        if have_distractors
        else None,
        corruption=corruption,
        summary={
            "tokens": width if int(lengths.min()) == width else f"{int(lengths.min())}-{width}",
            "prepend_bos": prepend_bos,
            "bos_added": f"{bos_added} of {len(pairs)} prompts",
        },
        spans=spans,
    )


def _pad_id(context: TaskContext) -> int:
    tokenizer = context.tokenizer
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None) if tokenizer is not None else None
        if isinstance(value, int) and 0 <= value < context.d_vocab:
            return value
    return 0
