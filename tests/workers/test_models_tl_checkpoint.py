"""``tl:DIR``: classic TransformerLens checkpoints (HookedTransformer config + state dict).

Each test writes its own model in TransformerLens naming with random weights (no model hub)
and compares the loaded bridge against a reference forward written here in plain torch from
the TransformerLens-named weights, in float64, following HookedTransformer's math.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from circuitreg.workers.models import ModelLoadError, load_model

pytestmark = pytest.mark.usefixtures("one_thread")

# The toy: pre-LN, attention-only, learned positions, n_ctx 64, 2 layers.
BASE: dict[str, Any] = {
    "model_name": "lab-toy",
    "n_layers": 2,
    "d_model": 32,
    "n_heads": 4,
    "d_head": 8,
    "d_vocab": 50,
    "n_ctx": 64,
    "normalization_type": "LN",
    "positional_embedding_type": "standard",
    "attn_only": True,
    "act_fn": None,
    "d_mlp": None,
    # As HookedTransformerConfig.to_dict() writes them:
    "use_attn_scale": True,
    "attn_scale": math.sqrt(8),
    "eps": 1e-5,
    "use_attn_result": False,
    "init_weights": True,
    "seed": 0,
    "device": "cpu",
}
MLP = {**BASE, "attn_only": False, "act_fn": "gelu", "d_mlp": 64}


def _full(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config with HookedTransformerConfig's defaults filled in."""
    defaults = {
        "normalization_type": "LN", "positional_embedding_type": "standard",
        "attn_only": False, "gated_mlp": False, "final_rms": False, "d_vocab_out": -1,
        "n_key_value_heads": None, "attention_dir": "causal", "attn_scale": -1.0,
        "attn_scores_soft_cap": -1.0, "output_logits_soft_cap": -1.0, "rotary_dim": None,
        "rotary_base": 10000, "eps": 1e-5, "n_heads": -1, "d_mlp": None,
    }  # fmt: skip
    full = {**defaults, **cfg}
    if full["n_heads"] == -1:
        full["n_heads"] = full["d_model"] // full["d_head"]
    if full["d_vocab_out"] == -1:
        full["d_vocab_out"] = full["d_vocab"]
    if full["d_mlp"] is None:
        full["d_mlp"] = 4 * full["d_model"]
    return full


def make_weights(cfg: dict[str, Any], seed: int = 0, gain: float = 1.0) -> dict[str, torch.Tensor]:
    """A random HookedTransformer state dict for ``cfg`` (TransformerLens names and shapes).

    ``gain`` scales the matrices: without normalisation the residual stream grows with
    depth, and float32 logits in the hundreds cannot agree to 1e-5.
    """
    c = _full(cfg)
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.3) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale * (gain if len(shape) > 1 else 1.0)

    def norm(prefix: str, kind: str | None, size: int) -> dict[str, torch.Tensor]:
        params = {}
        if kind in ("LN", "RMS"):
            params[f"{prefix}.w"] = 1 + rand(size, scale=0.2)
        if kind == "LN":
            params[f"{prefix}.b"] = rand(size, scale=0.2)
        return params

    d_model, d_head, heads = c["d_model"], c["d_head"], c["n_heads"]
    kv = c["n_key_value_heads"] or heads
    kind, d_mlp = c["normalization_type"], c["d_mlp"]
    w = {"embed.W_E": rand(c["d_vocab"], d_model, scale=1.0)}
    if c["positional_embedding_type"] == "standard":
        w["pos_embed.W_pos"] = rand(c["n_ctx"], d_model, scale=0.5)
    for layer in range(c["n_layers"]):
        b = f"blocks.{layer}"
        w |= norm(f"{b}.ln1", kind, d_model)
        kv_prefix = "_" if c["n_key_value_heads"] is not None else ""  # HT's GQA names
        w[f"{b}.attn.W_Q"] = rand(heads, d_model, d_head)
        w[f"{b}.attn.b_Q"] = rand(heads, d_head)
        for name in ("K", "V"):
            w[f"{b}.attn.{kv_prefix}W_{name}"] = rand(kv, d_model, d_head)
            w[f"{b}.attn.{kv_prefix}b_{name}"] = rand(kv, d_head)
        w[f"{b}.attn.W_O"] = rand(heads, d_head, d_model)
        w[f"{b}.attn.b_O"] = rand(d_model)
        # HookedTransformer saves its mask buffers too.
        w[f"{b}.attn.mask"] = torch.tril(torch.ones(c["n_ctx"], c["n_ctx"], dtype=torch.bool))
        w[f"{b}.attn.IGNORE"] = torch.tensor(-torch.inf)
        if c["attn_only"]:
            continue
        w |= norm(f"{b}.ln2", kind, d_model)
        w[f"{b}.mlp.W_in"] = rand(d_model, d_mlp)
        w[f"{b}.mlp.W_out"] = rand(d_mlp, d_model)
        gated = c["gated_mlp"]
        w[f"{b}.mlp.b_in"] = torch.zeros(d_mlp) if gated else rand(d_mlp)
        w[f"{b}.mlp.b_out"] = torch.zeros(d_model) if gated else rand(d_model)
        if gated:
            w[f"{b}.mlp.W_gate"] = rand(d_model, d_mlp)
        if c["act_fn"] == "solu_ln" and kind == "LN":
            w |= norm(f"{b}.mlp.ln", "LN", d_mlp)
    final = kind
    if c["final_rms"] and kind is not None:
        final = "RMSPre" if kind in ("LNPre", "RMSPre") else "RMS"
    w |= norm("ln_final", final, d_model)
    w["unembed.W_U"] = rand(d_model, c["d_vocab_out"])
    w["unembed.b_U"] = rand(c["d_vocab_out"], scale=1.0)  # non-zero: must reach the logits
    return w


def _act(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "gelu":
        return F.gelu(x)
    if name in ("gelu_new", "gelu_fast", "gelu_pytorch_tanh"):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    if name == "relu":
        return x.clamp(min=0)
    if name == "silu":
        return x * torch.sigmoid(x)
    if name in ("solu", "solu_ln"):
        return x * x.softmax(dim=-1)
    raise AssertionError(name)


def reference_forward(
    weights: dict[str, torch.Tensor], cfg: dict[str, Any], tokens: torch.Tensor
) -> torch.Tensor:
    """HookedTransformer's forward, from its named weights, in float64."""
    c = _full(cfg)
    w = {k: v.double() for k, v in weights.items() if v.is_floating_point()}
    eps, kind = c["eps"], c["normalization_type"]

    def normalize(x: torch.Tensor, prefix: str, norm: str | None) -> torch.Tensor:
        if norm is None:
            return x
        if norm in ("LN", "LNPre"):
            x = x - x.mean(-1, keepdim=True)
        x = x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
        if norm in ("LN", "RMS"):
            x = x * w[f"{prefix}.w"]
        return x + w[f"{prefix}.b"] if norm == "LN" else x

    seq = tokens.shape[1]
    rotary = c["positional_embedding_type"] == "rotary"
    resid = w["embed.W_E"][tokens]
    if not rotary:
        resid = resid + w["pos_embed.W_pos"][:seq]

    def rope(x: torch.Tensor) -> torch.Tensor:  # adjacent pairs (rotary_adjacent_pairs)
        rd = c["rotary_dim"] or c["d_head"]
        freq = c["rotary_base"] ** (torch.arange(rd // 2, dtype=torch.float64) / (rd / 2))
        angles = torch.arange(seq, dtype=torch.float64)[:, None] / freq.repeat_interleave(2)
        sin, cos = angles.sin()[:, None, :], angles.cos()[:, None, :]
        x_rot, x_pass = x[..., :rd], x[..., rd:]
        turned = torch.empty_like(x_rot)
        turned[..., ::2], turned[..., 1::2] = -x_rot[..., 1::2], x_rot[..., ::2]
        return torch.cat([x_rot * cos + turned * sin, x_pass], dim=-1)

    def cap(x: torch.Tensor, value: float) -> torch.Tensor:
        return value * torch.tanh(x / value) if value > 0 else x

    heads = c["n_heads"]
    scale = c["attn_scale"] if c["attn_scale"] > 0 else math.sqrt(c["d_head"])
    for layer in range(c["n_layers"]):
        b = f"blocks.{layer}"
        x = normalize(resid, f"{b}.ln1", kind)
        qkv = {}
        for name in ("Q", "K", "V"):
            W = w.get(f"{b}.attn.W_{name}", w.get(f"{b}.attn._W_{name}"))
            bias = w.get(f"{b}.attn.b_{name}", w.get(f"{b}.attn._b_{name}"))
            assert W is not None and bias is not None
            out = torch.einsum("bpm,hmd->bphd", x, W) + bias
            qkv[name] = out.repeat_interleave(heads // out.shape[2], dim=2)
        q, k, v = qkv["Q"], qkv["K"], qkv["V"]
        if rotary:
            q, k = rope(q), rope(k)
        scores = cap(torch.einsum("bqhd,bkhd->bhqk", q, k) / scale, c["attn_scores_soft_cap"])
        if c["attention_dir"] == "causal":
            future = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1)
            scores = scores.masked_fill(future, -torch.inf)
        z = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)
        resid = resid + torch.einsum("bqhd,hdm->bqm", z, w[f"{b}.attn.W_O"]) + w[f"{b}.attn.b_O"]
        if c["attn_only"]:
            continue
        x = normalize(resid, f"{b}.ln2", kind)
        pre = x @ w[f"{b}.mlp.W_in"] + w[f"{b}.mlp.b_in"]
        if c["gated_mlp"]:
            post = _act(c["act_fn"], x @ w[f"{b}.mlp.W_gate"]) * pre
        else:
            post = _act(c["act_fn"], pre)
        if c["act_fn"] == "solu_ln":
            post = normalize(post, f"{b}.mlp.ln", "LN" if kind == "LN" else "LNPre")
        resid = resid + post @ w[f"{b}.mlp.W_out"] + w[f"{b}.mlp.b_out"]
    final = kind
    if c["final_rms"] and kind is not None:
        final = "RMSPre" if kind in ("LNPre", "RMSPre") else "RMS"
    logits = normalize(resid, "ln_final", final) @ w["unembed.W_U"] + w["unembed.b_U"]
    return cap(logits, c["output_logits_soft_cap"])


def write_checkpoint(
    directory: Path, cfg: dict[str, Any], weights: dict[str, torch.Tensor], fmt: str = "pt"
) -> Path:
    """``config.json`` and ``model.pt`` (torch.save) or ``model.safetensors`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(cfg, indent=2))
    if fmt == "pt":
        path = directory / "model.pt"
        torch.save(weights, path)
    else:
        from safetensors.torch import save_file

        path = directory / "model.safetensors"
        save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
    return path


def _tokens(cfg: dict[str, Any], batch: int = 3, seq: int | None = None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    return torch.randint(0, cfg["d_vocab"], (batch, seq or cfg["n_ctx"]), generator=gen)


def _logits(bridge: Any, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = bridge(tokens)
    assert isinstance(out, torch.Tensor)
    return out.double()


def _native_forward(weights: dict[str, torch.Tensor], cfg: dict[str, Any], tokens: torch.Tensor):
    """NativeModel itself, with the TL weights mapped by hand; its head has no bias slot."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge.sources.native import NativeModel

    c = _full(cfg)
    heads, d_head = c["n_heads"], c["d_head"]
    native = NativeModel(TransformerBridgeConfig.from_dict(dict(c))).eval()
    mapped = {
        "tok_embed.weight": weights["embed.W_E"],
        "pos.weight": weights["pos_embed.W_pos"],
        "ln_out.weight": weights["ln_final.w"],
        "ln_out.bias": weights["ln_final.b"],
        "head.weight": weights["unembed.W_U"].T,
    }
    for layer in range(c["n_layers"]):
        tl, nat = f"blocks.{layer}", f"layers.{layer}"
        mapped[f"{nat}.ln1.weight"] = weights[f"{tl}.ln1.w"]
        mapped[f"{nat}.ln1.bias"] = weights[f"{tl}.ln1.b"]
        for name in ("Q", "K", "V"):
            W = weights[f"{tl}.attn.W_{name}"]  # [heads, d_model, d_head]
            mapped[f"{nat}.attn.{name.lower()}.weight"] = W.transpose(1, 2).reshape(
                heads * d_head, -1
            )
            mapped[f"{nat}.attn.{name.lower()}.bias"] = weights[f"{tl}.attn.b_{name}"].flatten()
        mapped[f"{nat}.attn.o.weight"] = weights[f"{tl}.attn.W_O"].reshape(heads * d_head, -1).T
        mapped[f"{nat}.attn.o.bias"] = weights[f"{tl}.attn.b_O"]
    native.load_state_dict(mapped, strict=True)
    with torch.no_grad():
        return native(tokens).double() + weights["unembed.b_U"].double()


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_attn_only_ln_checkpoint_matches_the_reference_forward(tmp_path: Path, fmt: str) -> None:
    weights = make_weights(BASE)
    path = write_checkpoint(tmp_path / "my_tl_model", BASE, weights, fmt)
    loaded = load_model(f"tl:{tmp_path / 'my_tl_model'}", "cpu")

    assert loaded.source == "tl" and loaded.device == "cpu"
    ref = loaded.ref
    assert ref.revision == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (ref.name, ref.architecture, ref.checkpoint) == (
        "lab-toy",
        "TransformerLensNative",
        path.name,
    )
    assert (ref.n_layers, ref.n_heads, ref.d_model, ref.attn_only) == (2, 4, 32, True)
    assert loaded.info["tl_config"] == BASE and loaded.info["d_vocab"] == 50

    tokens = _tokens(BASE)  # the full n_ctx
    logits = _logits(loaded.bridge, tokens)
    expected = reference_forward(weights, BASE, tokens)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, _native_forward(weights, BASE, tokens), atol=1e-5, rtol=0)
    # b_U is in the logits, not dropped: without it they would differ by it.
    no_bias = reference_forward({**weights, "unembed.b_U": torch.zeros(50)}, BASE, tokens)
    assert (logits - no_bias).sub(weights["unembed.b_U"].double()).abs().max() < 1e-5

    # The bridge's hooks see it too: unembed.hook_out is the logits, b_U included.
    with torch.no_grad():
        out, cache = loaded.bridge.run_with_cache(tokens[:1, :10])
    torch.testing.assert_close(cache["unembed.hook_out"], out)
    torch.testing.assert_close(loaded.bridge.unembed.b_U, weights["unembed.b_U"])
    assert cache["blocks.1.attn.hook_pattern"].shape == (1, 4, 10, 10)
    with pytest.raises(ValueError, match="n_ctx"):
        loaded.bridge(torch.zeros(1, 65, dtype=torch.long))


def test_mlp_gelu_checkpoint_matches_the_reference_forward(tmp_path: Path) -> None:
    weights = make_weights(MLP, seed=1)
    write_checkpoint(tmp_path / "mlp", MLP, weights, "safetensors")
    loaded = load_model(f"tl:{tmp_path / 'mlp'}", "cpu")
    assert loaded.ref.attn_only is False
    tokens = _tokens(MLP)
    torch.testing.assert_close(
        _logits(loaded.bridge, tokens), reference_forward(weights, MLP, tokens), atol=1e-5, rtol=0
    )


VARIANTS = {
    "rms-gated-gqa-rotary": {
        **MLP, "normalization_type": "RMS", "gated_mlp": True, "act_fn": "silu",
        "n_key_value_heads": 2, "positional_embedding_type": "rotary",
        "rotary_adjacent_pairs": True, "rotary_dim": 4, "rotary_base": 500,
    },
    "lnpre-solu_ln-final_rms-caps": {
        **MLP, "normalization_type": "LNPre", "act_fn": "solu_ln", "final_rms": True,
        "d_vocab_out": 40, "attn_scores_soft_cap": 2.0, "output_logits_soft_cap": 3.0,
    },
    "ln-solu_ln-final_rms": {**MLP, "act_fn": "solu_ln", "final_rms": True},
    "no-norm-relu-bidirectional": {
        **MLP, "normalization_type": None, "act_fn": "relu", "attention_dir": "bidirectional",
        "attn_scale": 2.0, "d_head": 6, "n_heads": 3, "final_rms": True,
    },
    "rmspre-gelu_fast-d_head": {
        **MLP, "normalization_type": "RMSPre", "act_fn": "gelu_fast", "d_head": 16,
        "attn_scale": 4.0, "n_heads": -1, "d_mlp": None, "n_layers": 3,
    },
}  # fmt: skip


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_other_honoured_fields_match_the_reference_forward(tmp_path: Path, variant: str) -> None:
    cfg = VARIANTS[variant]
    weights = make_weights(cfg, seed=2, gain=0.3 if cfg["normalization_type"] is None else 1.0)
    write_checkpoint(tmp_path / variant, cfg, weights)
    loaded = load_model(f"tl:{tmp_path / variant}", "cpu")
    tokens = _tokens(cfg, seq=20)
    torch.testing.assert_close(
        _logits(loaded.bridge, tokens), reference_forward(weights, cfg, tokens), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"parallel_attn_mlp": True}, "parallel_attn_mlp=True"),
        ({"positional_embedding_type": "shortformer"}, "positional_embedding_type='shortformer'"),
        ({"positional_embedding_type": "rotary"}, "rotary_adjacent_pairs=False"),
        ({"use_attn_scale": False}, "use_attn_scale=False"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx=True"),
        ({"attn_only": False, "act_fn": "gelu_quick"}, "act_fn='gelu_quick'"),
        ({"normalization_type": "BatchNorm"}, "normalization_type='BatchNorm'"),
        ({"n_key_value_heads": 3}, "n_key_value_heads=3"),
        ({"attn_scale": 1.0}, "attn_scale=1.0"),
        ({"num_experts": 4}, "num_experts=4"),
        ({"frobnicate": 1}, "unknown config field frobnicate=1"),
        ({"d_vocab": None}, "d_vocab is required"),
    ],
)
def test_an_unsupported_config_field_is_refused_by_name(
    tmp_path: Path, change: dict[str, Any], field: str
) -> None:
    write_checkpoint(tmp_path / "m", {**BASE, **change}, make_weights(BASE))
    with pytest.raises(ModelLoadError, match=f"model 'tl:.*{_escape(field)}"):
        load_model(f"tl:{tmp_path / 'm'}", "cpu")


def _escape(text: str) -> str:
    import re

    return re.escape(text)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda w: w.pop("blocks.1.attn.W_K"), "missing weight(s) blocks.1.attn.W_K"),
        (lambda w: w.pop("unembed.b_U"), "missing weight(s) unembed.b_U"),
        (
            lambda w: w.update({"blocks.0.attn.W_O": torch.zeros(4, 32, 8)}),
            "'blocks.0.attn.W_O' has shape (4, 32, 8), expected (4, 8, 32)",
        ),
        (lambda w: w.update({"blocks.2.attn.W_Q": torch.zeros(1)}), "'blocks.2.attn.W_Q'"),
        (lambda w: w.update({"blocks.0.mlp.W_in": torch.zeros(1)}), "'blocks.0.mlp.W_in'"),
    ],
)
def test_missing_unexpected_or_misshaped_weights_are_refused_by_key(
    tmp_path: Path, edit: Any, message: str
) -> None:
    weights = make_weights(BASE)
    edit(weights)
    write_checkpoint(tmp_path / "m", BASE, weights)
    with pytest.raises(ModelLoadError, match=_escape(message)):
        load_model(f"tl:{tmp_path / 'm'}", "cpu")


def test_a_gated_mlp_with_biases_is_refused_by_key(tmp_path: Path) -> None:
    cfg = {**MLP, "gated_mlp": True, "act_fn": "silu"}
    weights = make_weights(cfg)
    weights["blocks.1.mlp.b_out"] = torch.ones(32)
    write_checkpoint(tmp_path / "m", cfg, weights)
    with pytest.raises(ModelLoadError, match=_escape("'blocks.1.mlp.b_out' is non-zero")):
        load_model(f"tl:{tmp_path / 'm'}", "cpu")


def test_the_files_are_found_or_the_ambiguity_named(tmp_path: Path) -> None:
    weights = make_weights(BASE)
    directory = tmp_path / "m"
    pt = write_checkpoint(directory, BASE, weights, "pt")
    write_checkpoint(directory, BASE, weights, "safetensors")
    with pytest.raises(ModelLoadError, match=r"several weights files \(model\.pt, model\.saf"):
        load_model(f"tl:{directory}", "cpu")
    loaded = load_model(f"tl:{pt}", "cpu")  # naming the file resolves it
    assert loaded.ref.checkpoint == "model.pt" and loaded.ref.name == "lab-toy"
    (directory / "config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"has no config\.json"):
        load_model(f"tl:{pt}", "cpu")
    with pytest.raises(ModelLoadError, match="no such file or directory"):
        load_model(f"tl:{tmp_path / 'absent'}", "cpu")
    nested = tmp_path / "nested"
    write_checkpoint(nested, BASE, {"model": weights})  # type: ignore[dict-item]
    with pytest.raises(ModelLoadError, match="not a flat state dict: 'model'"):
        load_model(f"tl:{nested}", "cpu")
    unnamed = {k: v for k, v in BASE.items() if k != "model_name"}
    write_checkpoint(tmp_path / "unnamed", unnamed, weights)
    assert load_model(f"tl:{tmp_path / 'unnamed'}", "cpu").ref.name == "unnamed"


def test_a_tl_directory_given_as_a_plain_path_points_at_tl(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "m", BASE, make_weights(BASE), "safetensors")
    with pytest.raises(ModelLoadError, match="load it as tl:"):
        load_model(str(tmp_path / "m"), "cpu")
