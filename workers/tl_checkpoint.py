"""Classic TransformerLens checkpoints on disk, loaded into TransformerLens 4's native model.

Labs hold toys trained with the old ``HookedTransformer``: a ``HookedTransformerConfig``
saved as JSON and ``HookedTransformer.state_dict()`` saved with ``torch.save`` or as
safetensors. TransformerLens 4 has no ``HookedTransformer``, but its native model
(``NativeModel``, the ``TransformerLensNative`` architecture) computes the same function for
the configurations it covers, and TL4 ships ``convert_tl_checkpoint``, which maps the old
per-head parameter names and shapes onto a native bridge's state dict. This module uses that
converter, and that bridge's ``unembed`` component (which keeps ``b_U`` as a buffer on the
head, added because ``NativeModel``'s head has no bias), so ``b_U`` is in the logits and in
``unembed.hook_out`` like every other hook.

What it adds is the checking the converter leaves to the caller, so that a checkpoint either
loads as exactly the function ``HookedTransformer`` computed or is refused with the field or
key at fault: every config field is honoured, known not to change the function (hook
switches, init, bookkeeping), or refused; every weight is checked by its TransformerLens name
and shape before anything is loaded.

A checkpoint directory holds ``config.json`` (the ``HookedTransformerConfig`` fields, as
``cfg.to_dict()`` writes them) and one weights file: ``*.pt`` / ``*.pth`` (a flat state
dict; loaded with ``weights_only=True``) or ``*.safetensors``. With several weights files the
spec must name one (``tl:DIR/model.pt``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

CONFIG_FILE = "config.json"
WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors")

# Fields that do not change what a HookedTransformer computes from its state dict: hook
# switches, initialisation, bookkeeping, placement and tokenizer hints. Weights are loaded
# as float32 whatever ``dtype`` says. ``window_size`` / ``attn_types`` are read only with
# ``use_local_attn``, ``experts_per_token`` only with ``num_experts``, the ``NTK_*`` factors
# only with ``use_NTK_by_parts_rope`` and ``relative_attention_*`` only with relative
# positions: each of those is refused below.
_NO_EFFECT = frozenset(
    {
        "model_name", "use_attn_result", "use_split_qkv_input", "use_hook_mlp_in",
        "use_attn_in", "use_hook_tokens", "ungroup_grouped_query_attention",
        "original_architecture", "from_checkpoint", "checkpoint_index",
        "checkpoint_label_type", "checkpoint_value", "tokenizer_name", "init_mode", "device",
        "n_devices", "seed", "initializer_range", "init_weights", "n_params",
        "default_prepend_bos", "dtype", "tokenizer_prepends_bos", "tokenizer_appends_eos",
        "default_padding_side", "trust_remote_code", "load_in_4bit", "decoder_start_token_id",
        "tie_word_embeddings", "window_size", "attn_types", "experts_per_token",
        "NTK_by_parts_low_freq_factor", "NTK_by_parts_high_freq_factor", "NTK_by_parts_factor",
        "NTK_original_ctx_len", "relative_attention_max_distance",
        "relative_attention_num_buckets",
    }
)  # fmt: skip

# Fields NativeModel honours at one value only: it has no parallel blocks, local or
# layer-scaled attention, unscaled scores, post-embedding or QK norms, Gemma-2 sandwich
# norms, experts or Llama-3.1 NTK-by-parts RoPE.
_ONLY_AT: dict[str, Any] = {
    "parallel_attn_mlp": False,
    "use_local_attn": False,
    "scale_attn_by_inverse_layer_idx": False,
    "use_attn_scale": True,
    "post_embedding_ln": False,
    "use_qk_norm": False,
    "use_normalization_before_and_after": False,
    "num_experts": None,
    "use_NTK_by_parts_rope": False,
}

# HookedTransformerConfig's defaults for the fields passed on to the native model.
_HONOURED: dict[str, Any] = {
    "n_layers": None, "d_model": None, "n_ctx": None, "d_head": None, "d_vocab": None,
    "n_heads": -1, "d_mlp": None, "act_fn": None, "d_vocab_out": -1, "eps": 1e-5,
    "attn_scale": -1.0, "normalization_type": "LN", "attention_dir": "causal",
    "attn_only": False, "final_rms": False, "positional_embedding_type": "standard",
    "rotary_dim": None, "rotary_base": 10000, "rotary_adjacent_pairs": False,
    "gated_mlp": False, "n_key_value_heads": None, "attn_scores_soft_cap": -1.0,
    "output_logits_soft_cap": -1.0,
}  # fmt: skip

_NORMALIZATIONS = (None, "LN", "LNPre", "RMS", "RMSPre")
# HookedTransformer's tanh-approximation GELUs, all NativeModel's ``gelu_new``.
_ACT_ALIASES = {"gelu_fast": "gelu_new", "gelu_pytorch_tanh": "gelu_new"}
_NATIVE_ACTS = ("gelu", "gelu_new", "relu", "silu", "swish", "solu", "solu_ln")
# HookedTransformer attention buffers (causal mask, IGNORE sentinel, RoPE tables): the
# native model rebuilds them from the config.
_BUFFERS = (".attn.mask", ".attn.IGNORE", ".attn.rotary_sin", ".attn.rotary_cos")


class TLCheckpointError(ValueError):
    """A TransformerLens checkpoint that cannot be loaded as it was computed; says why."""


@dataclass(frozen=True)
class TLCheckpoint:
    """The files of a checkpoint, its config as written, and the native config it maps to."""

    config_path: Path
    weights_path: Path
    tl_config: dict[str, Any]
    bridge_config: dict[str, Any]


def find_checkpoint_files(path: Path) -> tuple[Path, Path]:
    """``(config.json, weights file)`` for a checkpoint directory or a named weights file."""
    if path.is_file():
        if path.suffix not in WEIGHT_SUFFIXES:
            raise TLCheckpointError(f"{path} is not a {'/'.join(WEIGHT_SUFFIXES)} weights file")
        directory, weights = path.parent, path
    elif path.is_dir():
        directory = path
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
        if not found:
            raise TLCheckpointError(f"{path} holds no *.pt, *.pth or *.safetensors weights")
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise TLCheckpointError(
                f"{path} holds several weights files ({names}); name one, e.g. "
                f"tl:{path / found[0].name}"
            )
        weights = found[0]
    else:
        raise TLCheckpointError(f"{path}: no such file or directory")
    config = directory / CONFIG_FILE
    if not config.is_file():
        raise TLCheckpointError(f"{directory} has no {CONFIG_FILE} (the HookedTransformerConfig)")
    return config, weights


def _int_field(cfg: Mapping[str, Any], name: str, *, minimum: int = 1) -> int:
    value = cfg[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TLCheckpointError(f"config field {name}={value!r} must be an integer >= {minimum}")
    return value


def _refuse(name: str, value: Any, why: str) -> TLCheckpointError:
    return TLCheckpointError(f"config field {name}={value!r} is not supported: {why}")


def bridge_config_from_tl(tl_config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``TransformerBridgeConfig`` dict computing what ``tl_config`` computed, or refuse.

    Defaults are ``HookedTransformerConfig``'s, not TL4's (they differ: TL4 defaults
    ``act_fn`` to relu). Unknown fields are refused too: a field this module has not
    classified might change the function.
    """
    for name, value in tl_config.items():
        if name in _ONLY_AT and value != _ONLY_AT[name]:
            raise _refuse(name, value, f"the native model has only {name}={_ONLY_AT[name]!r}")
        if name not in _NO_EFFECT and name not in _ONLY_AT and name not in _HONOURED:
            raise TLCheckpointError(f"unknown config field {name}={value!r}")
    cfg = {name: tl_config.get(name, default) for name, default in _HONOURED.items()}
    for name in ("n_layers", "d_model", "n_ctx", "d_head", "d_vocab"):
        if cfg[name] is None:
            raise TLCheckpointError(f"config field {name} is required")
        _int_field(cfg, name)
    for name in ("attn_only", "final_rms", "gated_mlp", "rotary_adjacent_pairs"):
        if not isinstance(cfg[name], bool):
            raise TLCheckpointError(f"config field {name}={cfg[name]!r} must be true or false")
    for name in ("eps", "attn_scale", "attn_scores_soft_cap", "output_logits_soft_cap"):
        if isinstance(cfg[name], bool) or not isinstance(cfg[name], int | float):
            raise TLCheckpointError(f"config field {name}={cfg[name]!r} must be a number")
    if cfg["n_heads"] == -1:
        cfg["n_heads"] = cfg["d_model"] // cfg["d_head"]
    n_heads = _int_field(cfg, "n_heads")
    if cfg["n_key_value_heads"] is not None:
        kv_heads = _int_field(cfg, "n_key_value_heads")
        if n_heads % kv_heads:
            raise _refuse("n_key_value_heads", kv_heads, f"it must divide n_heads={n_heads}")
    if cfg["d_vocab_out"] != -1:
        _int_field(cfg, "d_vocab_out")
    if cfg["normalization_type"] not in _NORMALIZATIONS:
        raise _refuse("normalization_type", cfg["normalization_type"], f"not {_NORMALIZATIONS}")
    if cfg["normalization_type"] is None:
        cfg["final_rms"] = False  # HookedTransformer has no final norm to make RMS then
    if cfg["attention_dir"] not in ("causal", "bidirectional"):
        raise _refuse("attention_dir", cfg["attention_dir"], "not causal or bidirectional")
    scale = float(cfg["attn_scale"])
    if scale != -1.0 and (scale <= 0 or (cfg["d_head"] > 1 and math.isclose(scale, 1.0))):
        # HookedTransformer divides by any positive value; the native model refuses 1.0
        # and replaces values <= 0 with sqrt(d_head).
        raise _refuse("attn_scale", cfg["attn_scale"], "the native model divides by sqrt(d_head)")
    _check_positions(cfg)
    if not cfg["attn_only"]:
        _check_mlp(cfg)
    return {**cfg, "architecture": "TransformerLensNative"}


def _check_positions(cfg: dict[str, Any]) -> None:
    kind = cfg["positional_embedding_type"]
    if kind == "standard":
        return
    if kind != "rotary":
        raise _refuse("positional_embedding_type", kind, "the native model has standard, rotary")
    if not cfg["rotary_adjacent_pairs"]:
        # HookedTransformer's default rotates the two halves of each head; NativeRotary
        # rotates adjacent pairs, which HookedTransformer computes only with this flag set.
        raise _refuse("rotary_adjacent_pairs", False, "the native model rotates adjacent pairs")
    if cfg["rotary_dim"] is None:
        cfg["rotary_dim"] = cfg["d_head"]
    rotary_dim = _int_field(cfg, "rotary_dim", minimum=2)
    if rotary_dim % 2 or rotary_dim > cfg["d_head"]:
        raise _refuse("rotary_dim", rotary_dim, "it must be even and at most d_head")
    base = cfg["rotary_base"]
    if isinstance(base, bool) or not isinstance(base, int | float) or base != int(base):
        raise _refuse("rotary_base", base, "the native model needs an integer base")


def _check_mlp(cfg: dict[str, Any]) -> None:
    if cfg["d_mlp"] is None:
        cfg["d_mlp"] = 4 * cfg["d_model"]
    _int_field(cfg, "d_mlp")
    act = cfg["act_fn"]
    if not isinstance(act, str):
        raise TLCheckpointError(f"config field act_fn={act!r} must name an activation")
    act = _ACT_ALIASES.get(act, act)
    if act not in _NATIVE_ACTS:
        raise _refuse("act_fn", cfg["act_fn"], f"the native model has {', '.join(_NATIVE_ACTS)}")
    if cfg["gated_mlp"] and act == "solu_ln":
        raise _refuse("act_fn", act, "the native gated MLP has no mid-MLP LayerNorm")
    cfg["act_fn"] = act


def _norm_shapes(prefix: str, kind: str | None, size: int) -> dict[str, tuple[int, ...]]:
    if kind == "LN":
        return {f"{prefix}.w": (size,), f"{prefix}.b": (size,)}
    return {f"{prefix}.w": (size,)} if kind == "RMS" else {}


def expected_shapes(cfg: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every parameter ``HookedTransformer.state_dict()`` holds for ``cfg``, by TL name."""
    d_model, d_head, n_heads = cfg["d_model"], cfg["d_head"], cfg["n_heads"]
    kv_heads = cfg["n_key_value_heads"] or n_heads
    norm = cfg["normalization_type"]
    shapes: dict[str, tuple[int, ...]] = {"embed.W_E": (cfg["d_vocab"], d_model)}
    if cfg["positional_embedding_type"] == "standard":
        shapes["pos_embed.W_pos"] = (cfg["n_ctx"], d_model)
    for layer in range(cfg["n_layers"]):
        block = f"blocks.{layer}"
        shapes.update(_norm_shapes(f"{block}.ln1", norm, d_model))
        shapes[f"{block}.attn.W_Q"] = (n_heads, d_model, d_head)
        shapes[f"{block}.attn.b_Q"] = (n_heads, d_head)
        for name in ("K", "V"):
            shapes[f"{block}.attn.W_{name}"] = (kv_heads, d_model, d_head)
            shapes[f"{block}.attn.b_{name}"] = (kv_heads, d_head)
        shapes[f"{block}.attn.W_O"] = (n_heads, d_head, d_model)
        shapes[f"{block}.attn.b_O"] = (d_model,)
        if cfg["attn_only"]:
            continue
        d_mlp = cfg["d_mlp"]
        shapes.update(_norm_shapes(f"{block}.ln2", norm, d_model))
        shapes[f"{block}.mlp.W_in"] = (d_model, d_mlp)
        shapes[f"{block}.mlp.b_in"] = (d_mlp,)
        if cfg["gated_mlp"]:
            shapes[f"{block}.mlp.W_gate"] = (d_model, d_mlp)
        shapes[f"{block}.mlp.W_out"] = (d_mlp, d_model)
        shapes[f"{block}.mlp.b_out"] = (d_model,)
        if cfg["act_fn"] == "solu_ln":
            shapes.update(_norm_shapes(f"{block}.mlp.ln", "LN" if norm == "LN" else None, d_mlp))
    final = norm
    if cfg["final_rms"]:
        final = "RMSPre" if norm in ("LNPre", "RMSPre") else "RMS"
    shapes.update(_norm_shapes("ln_final", final, d_model))
    d_vocab_out = cfg["d_vocab"] if cfg["d_vocab_out"] == -1 else cfg["d_vocab_out"]
    shapes["unembed.W_U"] = (d_model, d_vocab_out)
    shapes["unembed.b_U"] = (d_vocab_out,)
    return shapes


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The flat tensor dict in a ``.pt``/``.pth`` (``weights_only``) or safetensors file."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch and safetensors raise many types for unreadable files
        raise TLCheckpointError(f"{path} is not a readable weights file: {exc}") from None
    if not isinstance(loaded, Mapping):
        raise TLCheckpointError(f"{path} holds a {type(loaded).__name__}, not a state dict")
    for key, value in loaded.items():
        if not isinstance(value, torch.Tensor):
            raise TLCheckpointError(
                f"{path} is not a flat state dict: {key!r} holds a {type(value).__name__}"
            )
    return {str(key): value for key, value in loaded.items()}


def check_state_dict(
    state_dict: Mapping[str, torch.Tensor], cfg: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    """The state dict as float32 in TL names ``convert_tl_checkpoint`` accepts, or refuse.

    Grouped-query K/V may be stored as ``_W_K``/``_b_K`` (their parameter names in
    HookedTransformer) and are renamed; attention buffers are dropped. A gated MLP's
    ``b_in``/``b_out`` must be zero, as the native gated MLP has no biases. A SoLU-LN model
    without LayerNorm weights gets the identity ones (HookedTransformer used a weightless
    LayerNorm there).
    """
    expected = expected_shapes(cfg)
    weights: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if key.endswith(_BUFFERS) and key.startswith("blocks."):
            continue
        name = key.replace(".attn._W_", ".attn.W_").replace(".attn._b_", ".attn.b_")
        if name in weights:
            raise TLCheckpointError(f"weights hold both {name!r} and {key!r}")
        if name not in expected:
            raise TLCheckpointError(f"unexpected weight {key!r} for this config")
        if tuple(tensor.shape) != expected[name]:
            raise TLCheckpointError(
                f"weight {key!r} has shape {tuple(tensor.shape)}, expected {expected[name]}"
            )
        if not tensor.is_floating_point():
            raise TLCheckpointError(f"weight {key!r} is {tensor.dtype}, not floating point")
        weights[name] = tensor.detach().to(torch.float32)
    missing = [name for name in expected if name not in weights]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise TLCheckpointError(f"missing weight(s) {', '.join(missing[:5])}{more}")
    for layer in range(cfg["n_layers"]):
        if cfg["gated_mlp"] and not cfg["attn_only"]:
            for name in (f"blocks.{layer}.mlp.b_in", f"blocks.{layer}.mlp.b_out"):
                if torch.count_nonzero(weights.pop(name)):
                    raise TLCheckpointError(
                        f"weight {name!r} is non-zero, but the native gated MLP has no biases"
                    )
        ln = f"blocks.{layer}.mlp.ln"
        if cfg["act_fn"] == "solu_ln" and not cfg["attn_only"] and f"{ln}.w" not in weights:
            weights[f"{ln}.w"] = torch.ones(cfg["d_mlp"])
            weights[f"{ln}.b"] = torch.zeros(cfg["d_mlp"])
    return weights


def read_checkpoint(path: Path) -> tuple[TLCheckpoint, dict[str, torch.Tensor]]:
    """The checkpoint at ``path`` (directory or weights file), checked, and its TL weights."""
    config_path, weights_path = find_checkpoint_files(path)
    try:
        tl_config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TLCheckpointError(f"{config_path} is not readable JSON: {exc}") from None
    if not isinstance(tl_config, dict):
        raise TLCheckpointError(f"{config_path} is not a JSON object")
    bridge_config = bridge_config_from_tl(tl_config)
    weights = check_state_dict(read_state_dict(weights_path), bridge_config)
    return TLCheckpoint(config_path, weights_path, tl_config, bridge_config), weights


def load_tl_bridge(
    path: Path, device: str = "cpu", model_name: str | None = None
) -> tuple[TransformerBridge, TLCheckpoint]:
    """The checkpoint at ``path`` as a ``TransformerBridge`` on ``device``.

    Built as ``load_toy_bridge`` builds the toy (``NativeModel`` wrapped by
    ``native_bridge``), then loaded through the bridge with TL4's own
    ``convert_tl_checkpoint``, as TL4's legacy-repo loader does: only the bridge has a slot
    for ``b_U`` (``unembed.bias``).
    """
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge.sources.native import NativeModel
    from transformer_lens.utilities.tl_checkpoint_conversion import convert_tl_checkpoint

    from circuitreg.workers.native import native_bridge

    checkpoint, weights = read_checkpoint(Path(path))
    cfg = TransformerBridgeConfig.from_dict(dict(checkpoint.bridge_config))
    try:
        converted = convert_tl_checkpoint(weights, cfg)
        with torch.random.fork_rng(devices=[]):  # the throwaway init must not move the RNG
            model = NativeModel(cfg)
    except ValueError as exc:
        raise TLCheckpointError(f"{checkpoint.config_path}: {exc}") from None
    bridge = native_bridge(model, cfg, device, model_name or checkpoint.weights_path.parent.name)
    load_into_bridge: Any = bridge.load_state_dict  # untyped in TL4; maps names, strict
    try:
        load_into_bridge(converted, strict=True)
    except RuntimeError as exc:
        raise TLCheckpointError(
            f"{checkpoint.weights_path} does not fit its config: {exc}"
        ) from None
    return bridge, checkpoint
