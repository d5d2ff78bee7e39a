"""Compile a RASP program with tracr and write it as a fixture (needs the ``tracr`` extra).

tracr's compiled model is a haiku transformer without LayerNorm: per layer one multi-head
attention block then one ReLU MLP, each added to the residual stream, attention logits scaled
by ``1/sqrt(key_size)``. TransformerLens' ``NativeModel`` (normalization None, act_fn relu,
split q/k/v/o linears with biases) computes exactly that, so the conversion is a transpose per
matrix. The unembedding is tracr's own projection of the residual stream onto the program's
output space, rebuilt from the residual labels.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from circuitreg.workers.tracr.fixture import (
    CONFIG_FILE,
    MODEL_FILE,
    SAMPLES_FILE,
    TracrFixture,
    TracrSample,
    build_bridge,
    load_fixture,
)
from circuitreg.workers.tracr.programs import ProgramSpec

BOS = "BOS"
PAD = "PAD"


class TracrCompileError(RuntimeError):
    """tracr is missing, refused the program, or the converted model disagrees with RASP."""


def _tensor(array: Any) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float32))


def _native_state_dict(assembled: Any, n_layers: int, output_matrix: np.ndarray) -> dict[str, Any]:
    params = assembled.params
    state = {
        "tok_embed.weight": _tensor(params["token_embed"]["embeddings"]),
        "pos.weight": _tensor(params["pos_embed"]["embeddings"]),
        "head.weight": _tensor(output_matrix.T),
    }
    for layer in range(n_layers):
        prefix = f"transformer/layer_{layer}"
        pairs = {
            "attn.q": "attn/query",
            "attn.k": "attn/key",
            "attn.v": "attn/value",
            "attn.o": "attn/linear",
            "mlp.fc_in": "mlp/linear_1",
            "mlp.fc_out": "mlp/linear_2",
        }
        for ours, theirs in pairs.items():
            state[f"layers.{layer}.{ours}.weight"] = _tensor(params[f"{prefix}/{theirs}"]["w"]).T
            state[f"layers.{layer}.{ours}.bias"] = _tensor(params[f"{prefix}/{theirs}"]["b"])
    return {k: v.contiguous() for k, v in state.items()}


def _output_matrix(
    assembled: Any, label: str, output_encoding: dict[str, int] | None
) -> np.ndarray:
    """``[d_model, n_out]``: tracr's projection of the residual stream onto the output space."""
    labels = list(assembled.residual_labels)
    if output_encoding is None:
        # Numerical output: logit 0 is the value; logit 1 is a constant 0, so the engine's
        # logit_diff (answer 0, distractor 1) reads the program's value itself.
        matrix = np.zeros((len(labels), 2), dtype=np.float32)
        matrix[labels.index(label), 0] = 1.0
        return matrix
    matrix = np.zeros((len(labels), len(output_encoding)), dtype=np.float32)
    for value, index in output_encoding.items():
        matrix[labels.index(f"{label}:{value}"), index] = 1.0
    return matrix


def _samples(spec: ProgramSpec, program: Any, n: int, seed: int) -> list[dict[str, Any]]:
    from tracr.rasp import rasp

    rng = random.Random(seed)
    vocab = sorted(spec.vocab, key=str)
    samples = []
    for i in range(n):
        # Mostly full length: the task draws its prompts from these (one length per batch).
        length = spec.max_seq_len if i % 4 else rng.randint(1, spec.max_seq_len)
        inputs = [rng.choice(vocab) for _ in range(length)]
        outputs = rasp.evaluate(program, inputs)
        samples.append({"inputs": inputs, "outputs": list(outputs)})
    return samples


def compile_program(
    spec: ProgramSpec, out_dir: Path, *, n_samples: int = 256, seed: int = 0
) -> TracrFixture:
    """Compile ``spec``, write the fixture to ``out_dir`` and check it against RASP.

    Raises ``TracrCompileError`` if any sample's bridge output differs from the RASP
    evaluation (so a fixture that is written is known to be right).
    """
    try:
        from tracr.compiler import compiling
        from tracr.rasp import rasp
    except ImportError as exc:
        raise TracrCompileError(
            "compiling RASP programs needs the tracr extra: pip install 'circuitreg[tracr]'"
        ) from exc

    program = spec.make()
    try:
        assembled = compiling.compile_rasp_to_model(
            program,
            vocab=set(spec.vocab),
            max_seq_len=spec.max_seq_len,
            causal=spec.causal,
            compiler_bos=BOS,
            compiler_pad=PAD,
        )
    except (NotImplementedError, ValueError, KeyError) as exc:
        raise TracrCompileError(f"tracr cannot compile program {spec.name!r}: {exc}") from exc
    model_cfg = assembled.model_config
    categorical = rasp.is_categorical(program)
    output_encoding = (
        {str(k): int(v) for k, v in assembled.output_encoder.encoding_map.items()}
        if categorical
        else None
    )
    output_matrix = _output_matrix(assembled, program.label, output_encoding)
    config = {
        "name": spec.name,
        "bridge_config": _bridge_config(spec, assembled, output_matrix),
        "input_encoding": {str(k): int(v) for k, v in assembled.input_encoder.encoding_map.items()},
        "output_encoding": output_encoding,
        "bos": BOS,
        "pad": PAD,
        "max_seq_len": spec.max_seq_len,
        "causal": spec.causal,
        "output_label": program.label,
        "residual_labels": list(assembled.residual_labels),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = _native_state_dict(assembled, int(model_cfg.num_layers), output_matrix)
    save_file(state, str(out_dir / MODEL_FILE), metadata={"program": spec.name})
    (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=1, sort_keys=True))
    samples = _samples(spec, program, n_samples, seed)
    (out_dir / SAMPLES_FILE).write_text(json.dumps(samples, indent=1))
    fixture = load_fixture(out_dir)
    mismatches = check_fixture(fixture)
    if mismatches:
        raise TracrCompileError(f"compiled {spec.name!r} disagrees with RASP: {mismatches[:3]}")
    return fixture


def _bridge_config(spec: ProgramSpec, assembled: Any, output_matrix: Any) -> dict[str, Any]:
    """The ``TransformerBridge.boot_native`` config of the compiled model: no norm, ReLU MLPs,
    positions as tracr encodes them, and the output space narrowed to the program's output."""
    model_cfg = assembled.model_config
    return {
        "n_layers": int(model_cfg.num_layers),
        "d_model": int(output_matrix.shape[0]),
        "n_heads": int(model_cfg.num_heads),
        "d_head": int(model_cfg.key_size),
        "d_mlp": int(model_cfg.mlp_hidden_size),
        "d_vocab": len(assembled.input_encoder.encoding_map),
        "d_vocab_out": int(output_matrix.shape[1]),
        "n_ctx": spec.max_seq_len + 1,
        "attn_only": False,
        "act_fn": "relu",
        "normalization_type": None,
        "positional_embedding_type": "standard",
        "attention_dir": "causal" if spec.causal else "bidirectional",
        "default_prepend_bos": False,
        "seed": 0,
    }


def check_fixture(fixture: TracrFixture, tolerance: float = 1e-3) -> list[str]:
    """Run every sample through the bridge; describe each that differs from RASP."""
    bridge = build_bridge(fixture)
    by_length: dict[int, list[TracrSample]] = {}
    for sample in fixture.samples:
        by_length.setdefault(len(sample.inputs), []).append(sample)
    problems = []
    for samples in by_length.values():  # one batch per length: no padding is ever needed
        tokens = torch.stack([fixture.encode(s.inputs) for s in samples])
        with torch.no_grad():
            logits = bridge(tokens)
        for sample, row in zip(samples, logits, strict=True):
            problems += _compare(fixture, sample, fixture.decode(row), tolerance)
    return problems


def _compare(
    fixture: TracrFixture, sample: TracrSample, got: list[Any], tolerance: float
) -> list[str]:
    """A one-line description of the mismatch, if the bridge's output differs from RASP's
    at a position RASP defines (its None outputs are undefined; the model's are arbitrary)."""
    pairs = [(g, e) for g, e in zip(got, sample.outputs, strict=False) if e is not None]
    if fixture.categorical:
        ok = len(got) == len(sample.outputs) and all(str(g) == str(e) for g, e in pairs)
    else:
        ok = len(got) == len(sample.outputs) and all(
            abs(float(g) - float(e)) <= tolerance for g, e in pairs
        )
    if ok:
        return []
    return [f"{list(sample.inputs)}: bridge {got}, RASP {list(sample.outputs)}"]
