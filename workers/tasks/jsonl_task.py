"""A custom task from a JSONL file of prompt pairs.

One JSON object per line::

    {"clean": "When Mary and John ...", "corrupted": "When Alice and Bob ...",
     "answer": " Mary", "distractor": " John"}

``clean`` and ``corrupted`` are text (needs a tokenizer) or lists of token ids; ``answer`` and
``distractor`` are one token each, as text or id; ``distractor`` is optional (without it only
the prob and kl metrics apply). An optional top-level ``"corruption"`` key on the first line
describes how the corrupted prompts were made; otherwise the file name is recorded.

An optional ``"spans"`` names token ranges of the clean prompt for positional runs
(``discover --positions spans``): ``{"S1": [2, 3], "S2": [7, 8], "END": [9, 10]}``,
half-open ``[start, end)`` indices into the prompt's tokens as given (before any BOS the task
adds); every line must name the same spans, which must not overlap.

``prepend_bos`` (``jsonl:path=pairs.jsonl,prepend_bos=auto``): ``auto`` (default) adds the
model's BOS to prompts that do not already start with it, ``true`` always, ``false`` never.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from circuitreg.workers.tasks.base import TaskContext, TaskData, TaskError
from circuitreg.workers.tasks.prompt_spans import parse_spans
from circuitreg.workers.tasks.text import (
    PREPEND_BOS_CHOICES,
    PrependBos,
    PromptPair,
    build_from_pairs,
)

REQUIRED = ("clean", "corrupted", "answer")
ALLOWED = {*REQUIRED, "distractor", "corruption", "spans"}


def _pair(line_no: int, data: Any, path: Path) -> PromptPair:
    where = f"{path}:{line_no}"
    if not isinstance(data, dict):
        raise TaskError(f"{where}: expected a JSON object, got {type(data).__name__}")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise TaskError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(set(data) - ALLOWED)
    if unknown:
        raise TaskError(f"{where}: unknown field(s) {', '.join(unknown)}")
    for key in ("clean", "corrupted"):
        value = data[key]
        if not (
            isinstance(value, str)
            or (isinstance(value, list) and all(isinstance(t, int) for t in value))
        ):
            raise TaskError(f"{where}: {key} must be text or a list of token ids")
    for key in ("answer", "distractor"):
        if key in data and not isinstance(data[key], str | int):
            raise TaskError(f"{where}: {key} must be text or a token id")
    spans = parse_spans(data["spans"], where) if "spans" in data else None
    return PromptPair(
        data["clean"], data["corrupted"], data["answer"], data.get("distractor"), spans, where
    )


def load_jsonl_task(path: str | Path, context: TaskContext, prepend_bos: str = "auto") -> TaskData:
    """Read and tokenise a JSONL task file (``prepend_bos``: auto, true or false)."""
    if prepend_bos not in PREPEND_BOS_CHOICES:
        raise TaskError(f"jsonl task: prepend_bos={prepend_bos!r}: give one of auto, true, false")
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"task file {path} does not exist")
    pairs: list[PromptPair] = []
    corruption: str | None = None
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TaskError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
            pairs.append(_pair(line_no, data, path))
            if corruption is None and isinstance(data, dict) and "corruption" in data:
                corruption = str(data["corruption"])
    return build_from_pairs(
        "jsonl",
        {"path": str(path), "prepend_bos": prepend_bos},
        pairs,
        context,
        corruption or f"prompt pairs from {path.name}",
        prepend_bos=cast(PrependBos, prepend_bos),
    )


def build_jsonl(options: dict[str, str], context: TaskContext) -> TaskData:
    """Registry builder: ``jsonl:PATH`` or ``jsonl:path=PATH[,prepend_bos=auto|true|false]``."""
    if "path" not in options:
        raise TaskError("jsonl task needs a path: jsonl:/path/to/pairs.jsonl")
    return load_jsonl_task(options["path"], context, options.get("prepend_bos", "auto"))
