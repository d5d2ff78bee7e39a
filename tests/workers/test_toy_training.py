"""Toy trainer: config validation, data, determinism per seed, and the on-disk cache."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from circuitreg.settings import get_settings
from circuitreg.workers.toy import (
    ToyConfig,
    ToyConfigError,
    ToyRunError,
    ensure_induction_toy,
    load_run,
    train_induction,
)
from circuitreg.workers.toy.data import periodic_batch, repeated_random_tokens
from circuitreg.workers.toy.train import COMPLETE_MARKER

TINY = ToyConfig(
    seed=0, steps=12, d_model=16, n_heads=2, d_vocab=16, seq_len=4, min_block=2, n_checkpoints=4
)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def test_checkpoint_steps_are_log_spaced_from_zero_to_the_end() -> None:
    steps = ToyConfig().checkpoint_steps()
    assert steps[0] == 0 and steps[-1] == ToyConfig().steps
    assert len(steps) == ToyConfig().n_checkpoints
    gaps = [b - a for a, b in itertools.pairwise(steps[1:])]
    assert gaps == sorted(gaps), "log spacing: gaps grow"
    assert TINY.checkpoint_steps() == tuple(sorted(set(TINY.checkpoint_steps())))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("d_model", 30, "divisible"), ("min_block", 13, "min_block"), ("lr", -1.0, "lr")],
)
def test_bad_config_names_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ToyConfigError, match=message):
        ToyConfig(**{field: value})  # type: ignore[arg-type]


def test_config_hash_changes_with_every_field_and_round_trips() -> None:
    base = ToyConfig()
    assert ToyConfig.from_dict(base.to_dict()) == base
    assert ToyConfig(seed=1).config_hash() != base.config_hash()
    assert ToyConfig(lr=1e-3).config_hash() != base.config_hash()
    with pytest.raises(ToyConfigError, match="unknown"):
        ToyConfig.from_dict({"seed": 0, "bogus": 1})


def test_periodic_batch_repeats_each_row_with_its_own_period() -> None:
    gen = torch.Generator().manual_seed(0)
    tokens, mask = periodic_batch(64, 6, 20, min_block=2, generator=gen)
    assert tokens.shape == (64, 13) and mask.shape == (64, 12)
    assert bool((tokens[:, 0] == 0).all()) and bool((tokens[:, 1:] != 0).all())
    periods = set()
    for row, row_mask in zip(tokens, mask, strict=True):
        period = int((~row_mask).sum()) - 1
        body = row[1:]
        assert torch.equal(body[period:], body[: len(body) - period])
        periods.add(period)
    assert len(periods) > 1, "periods vary between rows"
    fixed = repeated_random_tokens(3, 5, 10, generator=gen)
    assert torch.equal(fixed[:, 1:6], fixed[:, 6:])


def test_training_is_deterministic_per_seed(tmp_path: Path) -> None:
    a = train_induction(TINY, out_dir=tmp_path / "a")
    b = train_induction(TINY, out_dir=tmp_path / "b")
    c = train_induction(ToyConfig(**{**TINY.to_dict(), "seed": 1}), out_dir=tmp_path / "c")
    assert [p.loss for p in a.loss_curve] == [p.loss for p in b.loss_curve]
    assert len(a.loss_curve) == TINY.steps
    for ca, cb in zip(a.checkpoints, b.checkpoints, strict=True):
        wa, wb = _weights(ca.path), _weights(cb.path)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    wa, wc = _weights(a.final.path), _weights(c.final.path)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert [c.step for c in a.checkpoints] == list(TINY.checkpoint_steps())


def test_ensure_reuses_a_complete_run_and_redoes_an_interrupted_one() -> None:
    run = ensure_induction_toy(TINY)
    assert run.run_dir == get_settings().toy_dir / TINY.config_hash()
    marker = run.run_dir / COMPLETE_MARKER
    stamp = run.final.path.stat().st_mtime_ns
    again = ensure_induction_toy(TINY)
    assert again.final.path.stat().st_mtime_ns == stamp, "cached run was not retrained"
    assert again.loss_curve == run.loss_curve

    marker.unlink()  # as if training had been interrupted before the marker
    with pytest.raises(Exception, match="incomplete"):
        load_run(run.run_dir)
    redone = ensure_induction_toy(TINY)
    assert (redone.run_dir / COMPLETE_MARKER).is_file()
    assert redone.loss_curve == run.loss_curve
    leftovers = [p for p in redone.run_dir.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == [], "temporary build directories are cleaned up"


def test_checkpoint_at_lists_saved_steps_when_missing() -> None:
    run = ensure_induction_toy(TINY)
    assert run.checkpoint_at(run.final.step) == run.final
    with pytest.raises(KeyError, match="saved steps"):
        run.checkpoint_at(7777)


def test_training_never_replaces_a_directory_that_is_not_a_toy_run(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ToyRunError, match="refusing"):
        train_induction(TINY, out_dir=precious)
    assert (precious / "notes.txt").read_text() == "keep me"
    run = train_induction(TINY, out_dir=tmp_path / "run")
    assert train_induction(TINY, out_dir=run.run_dir).run_dir == run.run_dir  # a run: replaced
