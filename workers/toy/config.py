"""The toy induction model's configuration, and the hash that names its cache directory.

Every field changes the trained weights, so every field goes into the hash: two configs with
the same hash are the same training run, which is what makes the on-disk cache safe to reuse.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

# Bump when the training procedure changes in a way the config cannot see (loss, data order),
# so that stale cached runs are not reused.
TRAINER_VERSION = 1


class ToyConfigError(ValueError):
    """A toy configuration that cannot be trained; the message names the bad field."""


@dataclass(frozen=True)
class ToyConfig:
    """How to train the 2-layer attention-only induction model.

    Training rows are BOS (token 0) followed by a random block of ``min_block..seq_len``
    tokens from ``1..d_vocab-1``, repeated to fill ``2*seq_len`` positions (see
    ``periodic_batch``), so the repeats are predictable only by induction. The defaults reach
    the induction phase change within a few hundred steps, in seconds on one CPU core.
    """

    seed: int = 0
    steps: int = 500
    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    d_vocab: int = 64
    seq_len: int = 12
    min_block: int = 4
    batch_size: int = 32
    lr: float = 5e-3
    weight_decay: float = 0.01
    n_checkpoints: int = 12
    first_checkpoint: int = 10

    def __post_init__(self) -> None:
        positive = ("steps", "n_layers", "d_model", "n_heads", "seq_len", "batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ToyConfigError(f"toy config: {name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ToyConfigError(
                f"toy config: d_model={self.d_model} is not divisible by n_heads={self.n_heads}"
            )
        if not 1 <= self.min_block <= self.seq_len:
            raise ToyConfigError(
                f"toy config: min_block must be in 1..seq_len={self.seq_len}, got {self.min_block}"
            )
        if self.d_vocab < 3:
            raise ToyConfigError(f"toy config: d_vocab must be >= 3, got {self.d_vocab}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ToyConfigError(f"toy config: lr must be a positive number, got {self.lr}")
        if self.weight_decay < 0:
            raise ToyConfigError(f"toy config: weight_decay must be >= 0, got {self.weight_decay}")
        if self.n_checkpoints < 2:
            raise ToyConfigError(
                f"toy config: n_checkpoints must be >= 2, got {self.n_checkpoints}"
            )
        if self.first_checkpoint < 1:
            raise ToyConfigError(
                f"toy config: first_checkpoint must be >= 1, got {self.first_checkpoint}"
            )

    @property
    def bos_token(self) -> int:
        """The token every sequence starts with; never part of the repeated block."""
        return 0

    @property
    def n_ctx(self) -> int:
        """Context length: BOS plus the block twice."""
        return 1 + 2 * self.seq_len

    @property
    def d_head(self) -> int:
        """Per-head dimension."""
        return self.d_model // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-safe."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToyConfig:
        """Inverse of ``to_dict``; unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ToyConfigError(f"toy config: unknown field(s) {unknown}")
        return cls(**data)

    def config_hash(self) -> str:
        """First 16 hex digits of the SHA-256 of the config and the trainer version."""
        payload = json.dumps({"trainer": TRAINER_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def checkpoint_steps(self) -> tuple[int, ...]:
        """Step 0, then ``n_checkpoints - 1`` log-spaced steps ending at ``steps``.

        Log spacing puts most checkpoints early, where the phase change happens; duplicate
        steps from rounding (short runs) are merged.
        """
        first = min(self.first_checkpoint, self.steps)
        count = self.n_checkpoints - 1
        if count == 1 or first == self.steps:
            return (0, self.steps)
        ratio = (self.steps / first) ** (1 / (count - 1))
        steps = {0, self.steps}
        steps.update(round(first * ratio**i) for i in range(count))
        return tuple(sorted(steps))

    def bridge_config(self) -> dict[str, Any]:
        """The ``TransformerBridge.boot_native`` config of the model.

        No LayerNorm: the residual stream is then an exact sum of the embedding and head
        outputs, so every edge's contribution is linear in its source until the attention
        softmax, which keeps discovered toy circuits easy to check by hand; at this size
        training is stable without it.
        """
        return {
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "d_head": self.d_head,
            "d_vocab": self.d_vocab,
            "n_ctx": self.n_ctx,
            "attn_only": True,
            "act_fn": "gelu",
            "normalization_type": None,
            "positional_embedding_type": "standard",
            "seed": self.seed,
        }
