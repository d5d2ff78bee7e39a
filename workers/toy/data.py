"""Repeated random token sequences: the toy's training data and the induction task's prompts."""

from __future__ import annotations

import torch


def repeated_random_tokens(
    n: int, seq_len: int, d_vocab: int, *, bos_token: int = 0, generator: torch.Generator
) -> torch.Tensor:
    """``[n, 1 + 2*seq_len]`` long tensor: BOS, then a random block, then the block again.

    Block tokens are uniform over ``0..d_vocab-1`` except ``bos_token``, so BOS only ever marks
    the start and the second half is predictable only by copying from the first.
    """
    if n < 1 or seq_len < 1:
        raise ValueError(f"need n >= 1 and seq_len >= 1, got n={n}, seq_len={seq_len}")
    if not 0 <= bos_token < d_vocab:
        raise ValueError(f"bos_token {bos_token} outside the vocabulary 0..{d_vocab - 1}")
    block = torch.randint(0, d_vocab - 1, (n, seq_len), generator=generator)
    block = block + (block >= bos_token).long()  # skip the BOS id
    bos = torch.full((n, 1), bos_token, dtype=torch.long)
    return torch.cat([bos, block, block], dim=1)


def periodic_batch(
    n: int,
    seq_len: int,
    d_vocab: int,
    *,
    min_block: int,
    bos_token: int = 0,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training batch ``[n, 1 + 2*seq_len]``: BOS, then a random block repeated periodically.

    Each row repeats its own block of length ``L`` (uniform in ``min_block..seq_len``) until
    the row is full. With one fixed ``L`` a layer-0 head could copy "the token ``L-1``
    positions back" from positions alone and no induction circuit would form; varying ``L``
    per row leaves induction as the only way to predict the repeats, and repeating (rather
    than padding) keeps every position after the first period useful for training.
    ``L = seq_len`` gives exactly the induction task's prompt ``[bos] + block + block``.

    Returns the tokens and a bool mask ``[n, 2*seq_len]`` over predicted positions (entry
    ``t`` predicts token ``t+1``) marking those induction can get right: every token after the
    first one of the second period.
    """
    if not 1 <= min_block <= seq_len:
        raise ValueError(f"min_block must be in 1..seq_len={seq_len}, got {min_block}")
    blocks = repeated_random_tokens(n, seq_len, d_vocab, bos_token=bos_token, generator=generator)
    periods = torch.randint(min_block, seq_len + 1, (n,), generator=generator)
    offsets = torch.arange(2 * seq_len)
    body = blocks[:, 1 : 1 + seq_len].gather(1, offsets[None, :] % periods[:, None])
    tokens = torch.cat([blocks[:, :1], body], dim=1)
    mask = offsets[None, :] >= periods[:, None] + 1
    return tokens, mask
