"""Named token spans of text-task prompts (IOI's S1, IO, S2, END; a JSONL file's own), turned
into the ``TokenSpans`` of a task so positional runs align prompts by span.

A span is a half-open range ``[start, end)`` of the clean prompt's tokens as the prompt file
gives them, before any BOS the task adds (the BOS shift is applied here), so a file does not
depend on the model's BOS. Every prompt must name the same spans: a prompt without S2 would
have nothing to align at S2. Spans must not overlap (a token counts towards one label) and
must lie inside the prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from circuitreg.workers.positions import PositionError, TokenSpans
from circuitreg.workers.tasks.base import TaskContext, TaskError

SpanRanges = Mapping[str, tuple[int, int]]


def parse_spans(value: Any, where: str) -> dict[str, tuple[int, int]]:
    """A JSON ``{"S1": [start, end], ...}`` as span ranges; ``TaskError`` naming the span."""
    if not isinstance(value, dict) or not value:
        raise TaskError(f"{where}: spans must be an object of name: [start, end] token ranges")
    spans: dict[str, tuple[int, int]] = {}
    for name, bounds in value.items():
        if (
            not isinstance(bounds, list)
            or len(bounds) != 2
            or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
        ):
            raise TaskError(f"{where}: span {name!r} must be [start, end] token indices")
        spans[str(name)] = (int(bounds[0]), int(bounds[1]))
    return spans


def token_ranges(
    context: TaskContext, text: str, chars: Mapping[str, tuple[int, int]], where: str
) -> dict[str, tuple[int, int]] | None:
    """The token ranges ``[start, end)`` of ``text`` that cover each named character range,
    through the tokenizer's offsets; None where it gives none (a slow tokenizer) or its
    offsets disagree with ``encode`` (the task then names no spans rather than wrong ones).

    Generators whose templates place a role at a known character (greater-than's year,
    docstring's argument names) name spans this way, whatever the tokenizer splits there."""
    tokenizer = context.tokenizer
    if tokenizer is None:
        return None
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = [tuple(o) for o in encoded["offset_mapping"]]
        ids = list(encoded["input_ids"])
    except (NotImplementedError, TypeError, ValueError, KeyError):
        return None
    if ids != list(tokenizer.encode(text, add_special_tokens=False)):
        return None
    ranges: dict[str, tuple[int, int]] = {}
    for name, (first, stop) in chars.items():
        hit = [i for i, (a, b) in enumerate(offsets) if a < stop and b > first]
        if not hit:
            raise TaskError(f"{where}: span {name!r} (characters {first}-{stop}) has no token")
        ranges[name] = (hit[0], hit[-1] + 1)
    return ranges


def span_index(
    spans: Sequence[SpanRanges | None], lengths: Sequence[int], shifts: Sequence[int], width: int,
    name: str, origins: Sequence[str] | None = None,
) -> TokenSpans | None:  # fmt: skip
    """The task's ``TokenSpans`` from each prompt's ranges (None where no prompt has spans).

    ``lengths`` are the prompts' token counts before the BOS shift, ``shifts`` 1 where a BOS
    was added, ``width`` the padded length; ``origins`` name each prompt in errors (a JSONL
    file's ``path:line``; default ``<task> example <i>``)."""
    if all(s is None for s in spans):
        return None
    origins = origins or [f"{name} example {i}" for i in range(len(spans))]
    names = _names(spans, origins)
    index = torch.full((len(spans), width), -1, dtype=torch.long)
    for i, ranges in enumerate(spans):
        assert ranges is not None
        for number, span in enumerate(names):
            start, end = ranges[span]
            where = f"{origins[i]} span {span!r}"
            if not 0 <= start < end <= lengths[i]:
                raise TaskError(
                    f"{where}: [{start}, {end}) is not a non-empty range inside the prompt's "
                    f"{lengths[i]} tokens"
                )
            window = index[i, start + shifts[i] : end + shifts[i]]
            if bool((window >= 0).any()):
                other = names[int(window[window >= 0][0])]
                raise TaskError(f"{where} overlaps span {other!r}")
            window.fill_(number)
    try:
        return TokenSpans(names, index)
    except PositionError as exc:
        raise TaskError(f"{name}: {exc}") from exc


def _names(spans: Sequence[SpanRanges | None], origins: Sequence[str]) -> tuple[str, ...]:
    first = spans[0]
    if first is None:
        raise TaskError(f"{origins[0]} names no spans but others do; name them in every prompt")
    names = tuple(first)
    for i, ranges in enumerate(spans):
        if ranges is None or set(ranges) != set(names):
            got = "none" if ranges is None else ", ".join(sorted(ranges))
            raise TaskError(
                f"{origins[i]}: spans {got} differ from {origins[0]}'s {', '.join(names)}; "
                "every prompt must name the same spans"
            )
    return names
