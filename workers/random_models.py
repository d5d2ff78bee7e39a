"""Randomly initialised Hugging Face checkpoints of real model shapes, written locally.

Speed and memory do not depend on trained weights: a random model of GPT-2 small's shape
costs exactly what GPT-2 small costs, so benchmarks and tests run on real shapes where no
hub can be reached. The checkpoint is an ordinary ``save_pretrained`` directory with no
tokenizer (tasks give token ids), so the same loading code (``load_model(DIR)``, which boots
``TransformerBridge.boot_transformers``) reads it and a real downloaded checkpoint alike.

The shapes are the published configs of each model (layers, heads, widths, context,
vocabulary); ``n_layers`` shrinks a shape for quick checks. Whether a method can run on one
is the engine's business: it refuses what it does not decompose (rotary positions, grouped
key/value heads) with the feature's name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER_FILE = "circuitreg_random_model.json"
"""Written beside the weights: which shape and seed made them (the weights are random)."""


class RandomModelError(ValueError):
    """An unknown shape, a bad override or an unusable target directory."""


@dataclass(frozen=True)
class ModelShape:
    """A named architecture: its ``transformers`` config class and the fields that size it."""

    name: str
    config_class: str
    fields: dict[str, Any]
    layers_field: str
    note: str

    def config(self, n_layers: int | None = None) -> Any:
        """The ``transformers`` config of this shape (``n_layers`` overrides the depth)."""
        import transformers

        fields = dict(self.fields)
        if n_layers is not None:
            if n_layers < 1:
                raise RandomModelError(f"n_layers must be >= 1, got {n_layers}")
            fields[self.layers_field] = n_layers
        config_cls: Callable[..., Any] = getattr(transformers, self.config_class)
        return config_cls(**fields)


def _gpt2(n_layer: int, n_head: int, n_embd: int) -> dict[str, Any]:
    return {"n_layer": n_layer, "n_head": n_head, "n_embd": n_embd, "n_positions": 1024,
            "vocab_size": 50257}  # fmt: skip


def _pythia(layers: int, heads: int, hidden: int) -> dict[str, Any]:
    return {"num_hidden_layers": layers, "num_attention_heads": heads, "hidden_size": hidden,
            "intermediate_size": 4 * hidden, "max_position_embeddings": 2048,
            "rotary_pct": 0.25, "vocab_size": 50304, "use_parallel_residual": True}  # fmt: skip


SHAPES: dict[str, ModelShape] = {
    shape.name: shape
    for shape in (
        ModelShape("gpt2-small", "GPT2Config", _gpt2(12, 12, 768), "n_layer", "124M, 32,491 edges"),
        ModelShape("gpt2-medium", "GPT2Config", _gpt2(24, 16, 1024), "n_layer", "355M"),
        ModelShape("gpt2-large", "GPT2Config", _gpt2(36, 20, 1280), "n_layer", "774M"),
        ModelShape(
            "opt-125m",
            "OPTConfig",
            {
                "num_hidden_layers": 12,
                "num_attention_heads": 12,
                "hidden_size": 768,
                "ffn_dim": 3072,
                "max_position_embeddings": 2048,
                "vocab_size": 50272,
                "word_embed_proj_dim": 768,
            },
            "num_hidden_layers",
            "125M, learned positions, ReLU",
        ),
        ModelShape(
            "pythia-70m",
            "GPTNeoXConfig",
            _pythia(6, 8, 512),
            "num_hidden_layers",
            "70M, rotary (the engine refuses it)",
        ),
        ModelShape(
            "pythia-160m",
            "GPTNeoXConfig",
            _pythia(12, 12, 768),
            "num_hidden_layers",
            "160M, rotary (the engine refuses it)",
        ),
    )
}


def shape_named(name: str) -> ModelShape:
    """The shape called ``name``; the error lists the known ones."""
    try:
        return SHAPES[name]
    except KeyError:
        raise RandomModelError(
            f"unknown model shape {name!r}; known: {', '.join(SHAPES)}"
        ) from None


def write_random_model(
    name: str, directory: Path, *, seed: int = 0, n_layers: int | None = None
) -> Path:
    """Write a random checkpoint of shape ``name`` into ``directory`` (created; must be empty).

    The weights are ``transformers``' own initialisation under ``torch.manual_seed(seed)``,
    written as safetensors with the config, so two runs with one seed give the same file.
    """
    import torch
    import transformers

    shape = shape_named(name)
    config = shape.config(n_layers)
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise RandomModelError(f"{directory} is not empty; give a new or empty directory")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.AutoModelForCausalLM.from_config(config)
    model.eval()
    model.save_pretrained(directory, safe_serialization=True)
    marker = {"shape": name, "seed": seed, "n_layers": n_layers, "weights": "random",
              "parameters": sum(p.numel() for p in model.parameters())}  # fmt: skip
    (directory / MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True))
    return directory
