"""Toy checkpoints on disk: a safetensors file per step and one ``config.json`` beside them.

The weights are the plain ``NativeModel`` state dict (TransformerLens' own native
architecture), so loading one is: build ``NativeModel`` from the config, load the tensors, and
wrap it in a ``TransformerBridge`` exactly as ``TransformerBridge.boot_native`` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from circuitreg.workers.toy.config import ToyConfig

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformer_lens.model_bridge.sources.native import NativeModel

CONFIG_FILE = "config.json"
CONFIG_KIND = "circuitreg-toy"


class ToyCheckpointError(ValueError):
    """A toy checkpoint that is missing, incomplete or not ours; the message says which."""


@dataclass(frozen=True)
class ToyCheckpointInfo:
    """What a checkpoint file says about itself: its run's config and hash, and its step.

    ``bridge_config`` is the bridge config stored in the run's ``config.json`` when it was
    trained; None for a run written before ``config.json`` carried one.
    """

    path: Path
    config: ToyConfig
    config_hash: str
    step: int
    bridge_config: dict[str, Any] | None = None


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint at ``step``; zero-padded so names sort by step."""
    return f"step-{step:06d}.safetensors"


def write_run_config(run_dir: Path, config: ToyConfig) -> Path:
    """Write ``config.json`` (toy config, its hash and the bridge config) into ``run_dir``."""
    path = run_dir / CONFIG_FILE
    payload = {
        "kind": CONFIG_KIND,
        "config_hash": config.config_hash(),
        "toy_config": config.to_dict(),
        "bridge_config": config.bridge_config(),
    }
    path.write_text(json.dumps(payload, indent=2, sort_keys=True))
    return path


def save_checkpoint(model: torch.nn.Module, path: Path, *, step: int, config_hash: str) -> None:
    """Save a model's weights with its step and config hash in the safetensors metadata."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"step": str(step), "config_hash": config_hash})


def read_checkpoint_info(path: Path) -> ToyCheckpointInfo:
    """Read the step from the file and the config from the ``config.json`` beside it."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ToyCheckpointError(f"toy checkpoint {path} does not exist")
    config_path = path.parent / CONFIG_FILE
    if not config_path.is_file():
        raise ToyCheckpointError(f"toy checkpoint {path} has no {CONFIG_FILE} beside it")
    try:
        payload: dict[str, Any] = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise ToyCheckpointError(f"{config_path} is not valid JSON: {exc}") from None
    if payload.get("kind") != CONFIG_KIND:
        raise ToyCheckpointError(f"{config_path} is not a circuitreg toy config")
    config = ToyConfig.from_dict(payload["toy_config"])
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise ToyCheckpointError(f"{path} is not a readable safetensors file: {exc}") from None
    if metadata.get("config_hash") != payload["config_hash"]:
        raise ToyCheckpointError(
            f"{path} was trained with config {metadata.get('config_hash')!r}, "
            f"but {config_path} describes {payload['config_hash']!r}"
        )
    bridge_config = payload.get("bridge_config")
    if bridge_config is not None and not isinstance(bridge_config, dict):
        raise ToyCheckpointError(f"{config_path}: bridge_config is not an object")
    return ToyCheckpointInfo(
        path, config, payload["config_hash"], int(metadata["step"]), bridge_config
    )


def checkpoint_bridge_config(info: ToyCheckpointInfo) -> dict[str, Any]:
    """The bridge config the checkpoint's weights were trained under.

    The one stored in ``config.json`` at training time is the truth for those weights: a
    later change to ``ToyConfig.bridge_config`` must not silently rebuild old checkpoints
    as a different architecture. Only a ``config.json`` that predates the stored field
    falls back to re-deriving it from the toy config.
    """
    if info.bridge_config is not None:
        return dict(info.bridge_config)
    return info.config.bridge_config()


def new_native_model(config: ToyConfig) -> NativeModel:
    """A freshly initialised native model, seeded by ``config.seed`` (as boot_native does)."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge.sources.native import (
        NativeModel,
        initialize_native_model,
    )

    cfg = TransformerBridgeConfig.from_dict(config.bridge_config())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = NativeModel(cfg)
        initialize_native_model(model, cfg)
    return model


def load_toy_bridge(path: Path, device: str = "cpu") -> tuple[TransformerBridge, ToyCheckpointInfo]:
    """The checkpoint at ``path`` as a ``TransformerBridge`` on ``device``, with its info."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge.sources.native import NativeModel

    from circuitreg.workers.native import native_bridge

    info = read_checkpoint_info(path)
    cfg = TransformerBridgeConfig.from_dict(checkpoint_bridge_config(info))
    with torch.random.fork_rng(devices=[]):  # the throwaway init must not move the caller's RNG
        model = NativeModel(cfg)
    try:
        model.load_state_dict(load_file(str(path)))
    except RuntimeError as exc:
        raise ToyCheckpointError(f"{path} does not match its config: {exc}") from None
    return native_bridge(model, cfg, device, f"toy-induction-{info.config_hash}"), info
