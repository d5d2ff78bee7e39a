"""The toy 2-layer attention-only induction model: training, cached checkpoints, head scores."""

from circuitreg.workers.toy.checkpoint import ToyCheckpointError, load_toy_bridge
from circuitreg.workers.toy.config import ToyConfig, ToyConfigError
from circuitreg.workers.toy.data import repeated_random_tokens
from circuitreg.workers.toy.heads import detect_heads
from circuitreg.workers.toy.train import (
    LossPoint,
    ToyCheckpoint,
    ToyRun,
    ToyRunError,
    ensure_induction_toy,
    load_run,
    train_induction,
)

__all__ = [
    "LossPoint",
    "ToyCheckpoint",
    "ToyCheckpointError",
    "ToyConfig",
    "ToyConfigError",
    "ToyRun",
    "ToyRunError",
    "detect_heads",
    "ensure_induction_toy",
    "load_run",
    "load_toy_bridge",
    "repeated_random_tokens",
    "train_induction",
]
