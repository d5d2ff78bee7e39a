"""Toy checkpoints load under the bridge config stored beside them, not a re-derived one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from circuitreg.workers.toy import ToyConfig, train_induction
from circuitreg.workers.toy.checkpoint import CONFIG_FILE, load_toy_bridge, read_checkpoint_info

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ToyConfig(
    seed=3, steps=4, d_model=16, n_heads=2, d_vocab=16, seq_len=4, min_block=2, n_checkpoints=2
)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return train_induction(TINY, out_dir=tmp_path / "toy").final.path


def _logits(path: Path) -> torch.Tensor:
    bridge, _ = load_toy_bridge(path)
    with torch.no_grad():
        out = bridge(torch.arange(1, 9).reshape(1, 8))
    assert isinstance(out, torch.Tensor)
    return out


def test_the_stored_bridge_config_is_used(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = json.loads((checkpoint.parent / CONFIG_FILE).read_text())["bridge_config"]
    assert read_checkpoint_info(checkpoint).bridge_config == stored
    expected = _logits(checkpoint)

    def changed(self: ToyConfig) -> dict[str, object]:
        raise AssertionError("re-derived the bridge config although config.json stores it")

    monkeypatch.setattr(ToyConfig, "bridge_config", changed)
    torch.testing.assert_close(_logits(checkpoint), expected)


def test_an_old_config_without_it_falls_back_to_re_deriving(checkpoint: Path) -> None:
    expected = _logits(checkpoint)
    config_path = checkpoint.parent / CONFIG_FILE
    payload = json.loads(config_path.read_text())
    del payload["bridge_config"]
    config_path.write_text(json.dumps(payload))
    assert read_checkpoint_info(checkpoint).bridge_config is None
    torch.testing.assert_close(_logits(checkpoint), expected)
