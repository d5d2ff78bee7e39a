"""load_model for every spec kind, the ModelRef it records, devices, and the LRU cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from circuitreg.workers.models import LoadedModel, ModelCache, ModelLoadError, load_model
from circuitreg.workers.toy import ToyConfig, train_induction
from circuitreg.workers.toy.checkpoint import new_native_model

TINY = ToyConfig(
    seed=2, steps=6, d_model=16, n_heads=2, d_vocab=16, seq_len=4, min_block=2, n_checkpoints=3
)


@pytest.fixture
def toy_run_dir(tmp_path: Path) -> Path:
    return train_induction(TINY, out_dir=tmp_path / "toy").run_dir


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_toy_checkpoint_loads_with_its_ref_and_matches_the_trained_weights(
    toy_run_dir: Path,
) -> None:
    from safetensors.torch import load_file

    path = toy_run_dir / "step-000006.safetensors"
    loaded = load_model(str(path), "cpu")
    ref = loaded.ref
    assert isinstance(loaded, LoadedModel) and loaded.source == "toy" and loaded.device == "cpu"
    assert (ref.step, ref.checkpoint, ref.revision) == (6, "step-6", _sha256(path))
    assert (ref.n_layers, ref.n_heads, ref.d_model, ref.attn_only) == (2, 2, 16, True)
    assert ref.name == f"toy-induction-{TINY.config_hash()}"
    assert loaded.info["bos_token"] == 0 and loaded.info["seq_len"] == 4

    native = new_native_model(TINY)
    native.load_state_dict(load_file(str(path)))
    tokens = torch.randint(1, 16, (3, 9))
    with torch.no_grad():
        assert torch.allclose(loaded.bridge(tokens), native(tokens), atol=1e-6)
    earlier = load_model(str(toy_run_dir / "step-000000.safetensors"), "cpu")
    assert earlier.ref.name == ref.name and earlier.ref.revision != ref.revision


def test_run_directory_loads_its_last_checkpoint(toy_run_dir: Path) -> None:
    assert load_model(str(toy_run_dir), "cpu").ref.step == TINY.steps


def test_toy_spec_trains_once_and_picks_a_step() -> None:
    options = ",".join(f"{k}={v}" for k, v in TINY.to_dict().items())
    last = load_model(f"toy:induction:{options}", "cpu")
    first = load_model(f"toy:induction:{options},step=0", "cpu")
    assert (last.ref.step, first.ref.step) == (TINY.steps, 0)
    with pytest.raises(ModelLoadError, match="saved steps"):
        load_model(f"toy:induction:{options},step=5", "cpu")
    with pytest.raises(ModelLoadError, match="unknown toy"):
        load_model("toy:bigram", "cpu")


def test_hugging_face_directory_loads_with_weights_hash(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=100, n_positions=64)
    torch.manual_seed(0)
    hf_model = transformers.GPT2LMHeadModel(cfg).eval()
    hf_model.save_pretrained(tmp_path / "tiny-gpt2")
    loaded = load_model(str(tmp_path / "tiny-gpt2"), "cpu")
    assert loaded.source == "hf"
    assert loaded.ref.architecture == "GPT2LMHeadModel" and loaded.ref.name == "tiny-gpt2"
    assert loaded.ref.revision == _sha256(tmp_path / "tiny-gpt2" / "model.safetensors")
    assert (loaded.ref.n_layers, loaded.ref.n_heads, loaded.ref.d_model) == (2, 4, 64)
    tokens = torch.randint(0, 100, (2, 7))
    with torch.no_grad():
        assert torch.allclose(loaded.bridge(tokens), hf_model(tokens).logits, atol=1e-4)


def test_unreachable_hub_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    # Offline mode makes the unreachable hub fail at once instead of after ~25 s of retries;
    # the constant is read at import time, so the environment alone is not enough.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="Hugging Face hub"):
        load_model("no-such-org/no-such-model", "cpu")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("./missing/step-000001.safetensors", "no such file"),
        ("tracr:no_such_program", "no built-in tracr program"),
        ("toy:induction:seed", "not key=value"),
    ],
)
def test_bad_specs_name_the_problem(spec: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        load_model(spec, "cpu")


def test_devices_resolve_or_fail_clearly() -> None:
    loaded = load_model("tracr:frac_prevs", "auto")
    expected = "cpu" if not torch.cuda.is_available() else loaded.device
    assert loaded.device == expected
    assert next(loaded.bridge.parameters()).device.type == expected.split(":")[0]
    with pytest.raises(ModelLoadError, match="not auto, cpu"):
        load_model("tracr:frac_prevs", "tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA"):
            load_model("tracr:frac_prevs", "cuda:0")


def test_model_cache_keeps_the_most_recent_models() -> None:
    cache = ModelCache(max_models=2)
    reverse = cache.get("tracr:reverse", "cpu")
    assert cache.get("tracr:reverse", "cpu") is reverse
    frac = cache.get("tracr:frac_prevs", "cpu")
    cache.get("tracr:reverse", "cpu")  # reverse is now the most recent
    options = ",".join(f"{k}={v}" for k, v in TINY.to_dict().items())
    cache.get(f"toy:induction:{options}", "cpu")
    assert len(cache) == 2
    assert ("tracr:frac_prevs", "cpu") not in cache
    assert cache.get("tracr:reverse", "cpu") is reverse
    assert cache.get("tracr:frac_prevs", "cpu") is not frac
    with pytest.raises(ValueError, match="max_models"):
        ModelCache(max_models=0)
