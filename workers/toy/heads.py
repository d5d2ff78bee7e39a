"""Score every attention head as a previous-token, duplicate-token or induction head.

TransformerLens' ``head_detector.detect_head`` takes text and tokenizes it with the model's
tokenizer, which the toy (and tracr models) lack, and it scores one prompt per forward pass.
We reuse its detection patterns and its scoring function unchanged
(``get_*_detection_pattern`` and ``compute_head_attention_similarity_score``, error measure
"mul": the fraction of a head's attention that lands where the pattern says) and only feed
them token tensors, one batched forward for all prompts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from circuitreg.schema.names import head_name
from circuitreg.workers.toy.data import repeated_random_tokens

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

HEAD_KINDS = ("previous_token_head", "duplicate_token_head", "induction_head")
HeadScores = dict[str, list[tuple[str, float]]]


def detect_heads(
    model: TransformerBridge,
    tokens: torch.Tensor | None = None,
    *,
    kinds: tuple[str, ...] = HEAD_KINDS,
    n_examples: int = 32,
    seq_len: int | None = None,
    bos_token: int = 0,
    seed: int = 0,
) -> HeadScores:
    """For each kind, every head as ``(name, score)`` sorted best first; scores in [0, 1].

    ``tokens`` ([N, T] long) defaults to ``n_examples`` repeated random blocks of
    ``seq_len`` tokens (default: as long as the context allows) after ``bos_token``, the
    prompts on which previous-token and induction heads are unambiguous. Scores are averaged
    over the prompts.
    """
    unknown = [k for k in kinds if k not in HEAD_KINDS]
    if unknown:
        raise ValueError(f"unknown head kind(s) {unknown}; known: {list(HEAD_KINDS)}")
    cfg = model.cfg
    tokens = _detection_prompts(cfg, tokens, n_examples, seq_len, bos_token, seed)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(cfg.n_layers)]
    device = next(model.parameters()).device
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens.to(device), names_filter=lambda n: n in names)
    patterns = [cache[name].float().cpu() for name in names]  # each [N, heads, q, k]

    results: HeadScores = {}
    for kind in kinds:
        scores = _kind_scores(kind, tokens, patterns, cfg.n_layers, cfg.n_heads)
        ranked = [
            (head_name(layer, head), round(float(scores[layer, head]), 6))
            for layer in range(cfg.n_layers)
            for head in range(cfg.n_heads)
        ]
        results[kind] = sorted(ranked, key=lambda item: -item[1])
    return results


def _detection_prompts(
    cfg: Any,
    tokens: torch.Tensor | None,
    n_examples: int,
    seq_len: int | None,
    bos_token: int,
    seed: int,
) -> torch.Tensor:
    """The given prompts, checked, or repeated random blocks as long as the context allows."""
    if tokens is None:
        length = seq_len if seq_len is not None else (cfg.n_ctx - 1) // 2
        if length < 2:
            raise ValueError(f"context of {cfg.n_ctx} tokens is too short for repeated blocks")
        generator = torch.Generator().manual_seed(seed)
        tokens = repeated_random_tokens(
            n_examples, length, cfg.d_vocab, bos_token=bos_token, generator=generator
        )
    if tokens.ndim != 2 or tokens.dtype != torch.long:
        raise ValueError("tokens must be a long tensor of shape [N, T]")
    if tokens.shape[1] > cfg.n_ctx:
        raise ValueError(f"prompts of {tokens.shape[1]} tokens exceed n_ctx={cfg.n_ctx}")
    return tokens


def _kind_scores(
    kind: str, tokens: torch.Tensor, patterns: list[torch.Tensor], n_layers: int, n_heads: int
) -> torch.Tensor:
    """``[layers, heads]`` mean similarity of each head's pattern to TransformerLens'
    detection pattern of ``kind``, over the prompts."""
    from transformer_lens import head_detector

    make_pattern = getattr(head_detector, f"get_{kind}_detection_pattern")
    totals = torch.zeros(n_layers, n_heads)
    for i in range(tokens.shape[0]):
        detection = make_pattern(tokens[i : i + 1].cpu())
        for layer in range(n_layers):
            for head in range(n_heads):
                totals[layer, head] += head_detector.compute_head_attention_similarity_score(
                    patterns[layer][i, head],
                    detection_pattern=detection,
                    exclude_bos=False,
                    exclude_current_token=False,
                    error_measure="mul",
                )
    return totals / tokens.shape[0]
