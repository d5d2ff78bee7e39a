"""Compiled tracr programs on disk, and their ``TransformerBridge``.

A fixture directory holds ``model.safetensors`` (the TransformerLens ``NativeModel`` state
dict converted from tracr's weights), ``config.json`` (the bridge config, the input and output
encodings, the residual-stream labels) and ``samples.json`` (inputs with the RASP evaluation
of the program on them). Loading needs neither JAX nor tracr.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
SAMPLES_FILE = "samples.json"


class TracrFixtureError(ValueError):
    """A fixture that is missing or malformed; the message names the file."""


@dataclass(frozen=True)
class TracrSample:
    """One input (without BOS) and the program's output at each of its positions."""

    inputs: tuple[Any, ...]
    outputs: tuple[Any, ...]


@dataclass(frozen=True)
class TracrFixture:
    """A compiled program: weights, bridge config, encodings and reference samples.

    ``input_encoding`` maps input values (including the BOS and pad tokens) to token ids;
    ``output_encoding`` maps output values to logit indices for categorical programs and is
    None for numerical ones, whose logit 0 is the value itself (logit 1 is a constant 0).
    """

    name: str
    directory: Path
    bridge_config: dict[str, Any]
    input_encoding: dict[str, int]
    output_encoding: dict[str, int] | None
    bos: str
    pad: str
    max_seq_len: int
    causal: bool
    residual_labels: tuple[str, ...]
    samples: tuple[TracrSample, ...]

    @property
    def model_path(self) -> Path:
        """The safetensors weights."""
        return self.directory / MODEL_FILE

    @property
    def categorical(self) -> bool:
        """Whether the output is a class (argmax of the logits) rather than a number."""
        return self.output_encoding is not None

    @property
    def bos_id(self) -> int:
        """Token id of BOS, always at position 0."""
        return self.input_encoding[self.bos]

    @property
    def vocab(self) -> tuple[str, ...]:
        """Input values a program accepts (BOS and pad excluded), sorted."""
        return tuple(sorted(v for v in self.input_encoding if v not in (self.bos, self.pad)))

    def defined_positions(self, length: int) -> list[int]:
        """Token positions (BOS is 0) whose output RASP defines in every sample of ``length``.

        RASP leaves some outputs undefined (None: ``shift_by``'s first position, the start of
        ``detect_pattern``); the compiled model writes something arbitrary there, so those
        positions are neither checked nor read by a task.
        """
        samples = [s for s in self.samples if len(s.inputs) == length]
        return [i + 1 for i in range(length) if all(s.outputs[i] is not None for s in samples)]

    def encode(self, inputs: tuple[Any, ...] | list[Any]) -> torch.Tensor:
        """Token ids ``[1 + len(inputs)]`` for one input, BOS first."""
        try:
            ids = [self.bos_id] + [self.input_encoding[str(x)] for x in inputs]
        except KeyError as exc:
            raise TracrFixtureError(
                f"tracr program {self.name!r}: {exc.args[0]!r} is not in its vocabulary "
                f"{list(self.vocab)}"
            ) from None
        if len(inputs) > self.max_seq_len:
            raise TracrFixtureError(
                f"tracr program {self.name!r}: input of {len(inputs)} exceeds "
                f"max_seq_len={self.max_seq_len}"
            )
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, logits: torch.Tensor) -> list[Any]:
        """Output values from logits ``[T, n_out]`` at the non-BOS positions."""
        body = logits[1:]
        if self.output_encoding is None:
            return [float(v) for v in body[:, 0]]
        by_index = {i: v for v, i in self.output_encoding.items()}
        return [by_index[int(i)] for i in body.argmax(-1)]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The weights as saved (``NativeModel`` parameter names)."""
        return load_file(str(self.model_path))


def fixture_path(name: str) -> Path:
    """Directory of the committed fixture called ``name``."""
    return FIXTURES_DIR / name


def available_fixtures() -> list[str]:
    """Names of the committed fixtures."""
    if not FIXTURES_DIR.is_dir():
        return []
    return sorted(p.name for p in FIXTURES_DIR.iterdir() if (p / CONFIG_FILE).is_file())


def load_fixture(directory: Path | str) -> TracrFixture:
    """Read a fixture directory (a committed name or any path written by the compiler)."""
    directory = Path(directory)
    if not directory.is_absolute() and not directory.exists():
        directory = fixture_path(str(directory))
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        known = ", ".join(available_fixtures()) or "none"
        raise TracrFixtureError(f"no tracr fixture at {directory} (committed: {known})")
    for required in (MODEL_FILE, SAMPLES_FILE):
        if not (directory / required).is_file():
            raise TracrFixtureError(f"tracr fixture {directory} lacks {required}")
    try:
        cfg = json.loads(config_path.read_text())
        samples = json.loads((directory / SAMPLES_FILE).read_text())
        return TracrFixture(
            name=cfg["name"],
            directory=directory,
            bridge_config=cfg["bridge_config"],
            input_encoding={str(k): int(v) for k, v in cfg["input_encoding"].items()},
            output_encoding=None
            if cfg["output_encoding"] is None
            else {str(k): int(v) for k, v in cfg["output_encoding"].items()},
            bos=cfg["bos"],
            pad=cfg["pad"],
            max_seq_len=int(cfg["max_seq_len"]),
            causal=bool(cfg["causal"]),
            residual_labels=tuple(cfg["residual_labels"]),
            samples=tuple(TracrSample(tuple(s["inputs"]), tuple(s["outputs"])) for s in samples),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TracrFixtureError(f"tracr fixture {directory} is malformed: {exc!r}") from None


def build_bridge(fixture: TracrFixture, device: str = "cpu") -> TransformerBridge:
    """The compiled program as a ``TransformerBridge`` (built like ``boot_native``)."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge.sources import build_bridge_from_module
    from transformer_lens.model_bridge.sources.native import NativeModel

    cfg = TransformerBridgeConfig.from_dict(dict(fixture.bridge_config))
    with torch.random.fork_rng(devices=[]):  # the throwaway init must not move the caller's RNG
        model = NativeModel(cfg)
    try:
        model.load_state_dict(fixture.state_dict())
    except RuntimeError as exc:
        raise TracrFixtureError(f"{fixture.model_path} does not match its config: {exc}") from None
    model = model.to(device).eval()
    return build_bridge_from_module(
        model,
        architecture="TransformerLensNative",
        tl_config=cfg,
        device=device,
        model_name=f"tracr-{fixture.name}",
    )
