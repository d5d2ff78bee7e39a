"""Induction on repeated random tokens: ``[BOS] A A``, read over the whole second copy.

At position ``i`` of the second copy the model sees ``A[i]`` and should predict ``A[i + 1]``
by finding the earlier ``A[i]`` (previous-token head -> induction head key). The corruption
decides what any method can see:

- ``first`` (default): the first copy is replaced, ``[BOS] B A``. The previous-token head
  writes something different at the first copy's positions, so the previous-token ->
  induction-head key edge carries a different value and methods reveal it.
- ``second``: the first copy is kept and the second replaced, ``[BOS] A B``. The
  previous-token head's output at the first copy is identical in both runs, so that key edge
  carries the same value and every method scores it zero: the corruption hides it.

The distractor at each read position is the replacement token at the same offset
(``B[i + 1]``), so ``logit_diff`` compares the induced token with a random one.

Spans (for ``positions=spans``), named after the last read position, where the second copy's
token ``A`` must be predicted from its first occurrence: ``A-first`` (that token in the first
copy), ``B-first`` (the token after it, whose key the previous-token head marks with ``A``)
and ``A-second`` (the read position itself, where the induction head's query looks for it).
With ``read=last`` only that position is read, so the spans hold the whole mechanism; with
``read=all`` (default) the other read positions count towards ``other``.
"""

from __future__ import annotations

import torch

from circuitreg.workers.positions import TokenSpans
from circuitreg.workers.tasks.base import TaskContext, TaskData, TaskError

SPAN_NAMES = ("A-first", "B-first", "A-second")
READS = ("all", "last")

CORRUPTIONS = {
    "first": "first occurrence of the repeated sequence replaced by random tokens",
    "second": "first occurrence kept, second occurrence replaced by random tokens",
}


def induction_task(
    seq_len: int = 8,
    n: int = 64,
    d_vocab: int = 50,
    corrupt: str = "first",
    seed: int = 0,
    bos_token_id: int | None = None,
    read: str = "all",
) -> TaskData:
    """Build the induction task (see the module docstring)."""
    if read not in READS:
        raise TaskError(f"induction read={read!r}; choose one of {', '.join(READS)}")
    if corrupt not in CORRUPTIONS:
        raise TaskError(f"induction corrupt={corrupt!r}; choose one of {', '.join(CORRUPTIONS)}")
    if seq_len < 2 or n < 1:
        raise TaskError(f"induction needs seq_len >= 2 and n >= 1, got {seq_len}, {n}")
    pool = torch.tensor([t for t in range(d_vocab) if t != bos_token_id], dtype=torch.long)
    if len(pool) < 2 * seq_len:
        raise TaskError(
            f"a vocabulary of {d_vocab} is too small for seq_len={seq_len} "
            f"(needs {2 * seq_len} distinct tokens)"
        )
    gen = torch.Generator().manual_seed(seed)
    # 2 * seq_len distinct tokens per row: A and its replacement B share no token.
    rows = pool[torch.rand(n, len(pool), generator=gen).argsort(dim=1)[:, : 2 * seq_len]]
    first, other = rows[:, :seq_len], rows[:, seq_len:]
    clean = torch.cat([first, first], dim=1)
    corrupted = torch.cat([other, first] if corrupt == "first" else [first, other], dim=1)
    offset = 0
    if bos_token_id is not None:
        bos = torch.full((n, 1), bos_token_id, dtype=torch.long)
        clean, corrupted = torch.cat([bos, clean], 1), torch.cat([bos, corrupted], 1)
        offset = 1
    positions = torch.arange(seq_len - 1).expand(n, -1) + offset + seq_len
    answers, distractors = first[:, 1:], other[:, 1:]
    if read == "last":
        positions, answers, distractors = positions[:, -1:], answers[:, -1:], distractors[:, -1:]
    spec: dict[str, object] = {"seq_len": seq_len, "n": n, "corrupt": corrupt, "seed": seed}
    if read != "all":  # only then, so the default task keeps its spec and hash
        spec["read"] = read
    return TaskData(
        name="induction",
        spec=spec,
        clean=clean,
        corrupted=corrupted,
        positions=positions.clone(),
        answers=answers.clone(),
        distractors=distractors.clone(),
        corruption=f"induction/{corrupt}: {CORRUPTIONS[corrupt]}",
        spans=_spans(n, clean.shape[1], offset, seq_len),
    )


def _spans(n: int, length: int, offset: int, seq_len: int) -> TokenSpans:
    """A-first, B-first and A-second of the last read position (the module docstring)."""
    index = torch.full((n, length), -1, dtype=torch.long)
    a_second = offset + 2 * seq_len - 2
    for number, at in enumerate((a_second - seq_len, a_second - seq_len + 1, a_second)):
        index[:, at] = number
    return TokenSpans(SPAN_NAMES, index)


def build_induction(options: dict[str, str], context: TaskContext) -> TaskData:
    """Registry builder: ``induction:seq_len=8,n=64,corrupt=first,seed=0``."""
    try:
        return induction_task(
            seq_len=int(options.get("seq_len", "8")),
            n=int(options.get("n", "64")),
            d_vocab=context.d_vocab,
            corrupt=options.get("corrupt", "first"),
            seed=int(options.get("seed", "0")),
            bos_token_id=context.bos_token_id,
            read=options.get("read", "all"),
        )
    except ValueError as exc:
        if isinstance(exc, TaskError):
            raise
        raise TaskError(f"induction options must be integers: {exc}") from exc
