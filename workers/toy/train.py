"""Train the toy induction model on the CPU, with checkpoints, a loss curve and a disk cache.

A run lives in ``get_settings().toy_dir / <config hash>``: ``config.json``, one safetensors
file per checkpoint step, ``loss_curve.json`` and, written last, the ``COMPLETE`` marker.
``ensure_induction_toy`` reuses a complete run and redoes an interrupted one. Runs are built in
a temporary sibling directory and renamed into place, so a reader never sees a half-written
run even while another process is training the same config.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from circuitreg.workers.toy.checkpoint import (
    checkpoint_name,
    new_native_model,
    save_checkpoint,
    write_run_config,
)
from circuitreg.workers.toy.config import ToyConfig
from circuitreg.workers.toy.data import periodic_batch

ProgressFn = Callable[[float, str], None]
COMPLETE_MARKER = "COMPLETE"
LOSS_CURVE_FILE = "loss_curve.json"


class ToyRunError(RuntimeError):
    """A cached toy run whose files are missing or inconsistent."""


@dataclass(frozen=True)
class ToyCheckpoint:
    """One saved checkpoint: its training step and its safetensors file."""

    step: int
    path: Path

    @property
    def label(self) -> str:
        """The checkpoint label recorded in ``ModelRef.checkpoint``."""
        return f"step-{self.step}"


@dataclass(frozen=True)
class LossPoint:
    """Training loss at one step: over all predicted tokens, and over the repeated half only.

    The repeated-half loss is what induction lowers; before the phase change it sits at
    ``ln(d_vocab - 1)`` like the first half, after it drops to near zero.
    """

    step: int
    loss: float
    induction_loss: float


@dataclass(frozen=True)
class ToyRun:
    """A finished training run: where it is, its config, checkpoints and loss curve.

    ``d_vocab``, ``seq_len`` and ``bos_token`` are what the induction task must use to make
    prompts this model was trained on: ``[bos] + block + block`` with ``len(block) == seq_len``.
    """

    run_dir: Path
    config: ToyConfig
    checkpoints: tuple[ToyCheckpoint, ...]
    loss_curve: tuple[LossPoint, ...]
    seconds: float

    @property
    def config_hash(self) -> str:
        """The hash that names the run directory."""
        return self.config.config_hash()

    @property
    def d_vocab(self) -> int:
        """Vocabulary size; token ids ``0..d_vocab-1``."""
        return self.config.d_vocab

    @property
    def seq_len(self) -> int:
        """Length of the repeated block (prompts are ``1 + 2*seq_len`` tokens)."""
        return self.config.seq_len

    @property
    def bos_token(self) -> int:
        """The BOS token id every training sequence starts with."""
        return self.config.bos_token

    @property
    def final(self) -> ToyCheckpoint:
        """The last checkpoint (the fully trained model)."""
        return self.checkpoints[-1]

    def checkpoint_at(self, step: int) -> ToyCheckpoint:
        """The checkpoint saved at exactly ``step``; the error lists the saved steps."""
        for ckpt in self.checkpoints:
            if ckpt.step == step:
                return ckpt
        steps = [c.step for c in self.checkpoints]
        raise KeyError(f"no checkpoint at step {step}; saved steps: {steps}")

    def phase_change_step(self, window: int = 10) -> int | None:
        """First step where the repeated-half loss (averaged over ``window`` steps) falls
        below half its starting value, or None if it never does."""
        values = [p.induction_loss for p in self.loss_curve]
        if not values:
            return None
        start = sum(values[:window]) / len(values[:window])
        for i in range(len(values)):
            chunk = values[max(0, i - window + 1) : i + 1]
            if sum(chunk) / len(chunk) < start / 2:
                return self.loss_curve[i].step
        return None


@contextmanager
def _single_thread() -> Iterator[None]:
    """Run with one intra-op thread: the toy's matrices are so small that thread
    start-up costs more than it saves (measured about 2x faster on 2 busy cores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _token_losses(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Next-token negative log-likelihood at every position, ``[batch, pos-1]``."""
    logits = model(tokens)
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return -log_probs.gather(-1, tokens[:, 1:, None])[..., 0]


def train_induction(
    config: ToyConfig, progress: ProgressFn | None = None, out_dir: Path | None = None
) -> ToyRun:
    """Train the toy model from scratch and save it to ``out_dir`` (default: the cache dir).

    Deterministic per ``config`` (seeded init and data, one CPU thread). Any previous
    contents of ``out_dir`` are replaced only once the new run is complete.
    """
    from circuitreg.settings import get_settings

    target = Path(out_dir) if out_dir is not None else get_settings().toy_dir / config.config_hash()
    _check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        run = _train_into(config, tmp, progress)
        (tmp / COMPLETE_MARKER).write_text(json.dumps({"seconds": run.seconds}))
        if target.exists():
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:
            # Another process finished the same run between our rmtree and rename: keep its.
            if not (target / COMPLETE_MARKER).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_run(target)


def _check_replaceable(target: Path) -> None:
    """Refuse to delete a directory that is neither empty nor a toy run (a mistyped --out)."""
    from circuitreg.workers.toy.checkpoint import CONFIG_FILE, CONFIG_KIND

    if not target.exists():
        return
    if not target.is_dir():
        raise ToyRunError(f"{target} exists and is not a directory")
    if not any(target.iterdir()):
        return
    try:
        is_toy_run = json.loads((target / CONFIG_FILE).read_text()).get("kind") == CONFIG_KIND
    except (OSError, ValueError, AttributeError):
        is_toy_run = False
    if not is_toy_run:
        raise ToyRunError(f"refusing to replace {target}: it is not empty and not a toy run")


def _train_into(config: ToyConfig, run_dir: Path, progress: ProgressFn | None) -> ToyRun:
    started = time.perf_counter()
    write_run_config(run_dir, config)
    save_at = set(config.checkpoint_steps())
    config_hash = config.config_hash()
    generator = torch.Generator().manual_seed(config.seed)
    curve: list[LossPoint] = []
    checkpoints: list[ToyCheckpoint] = []
    with _single_thread():
        model = new_native_model(config)
        model.train()
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        for step in range(config.steps + 1):
            if step in save_at:
                path = run_dir / checkpoint_name(step)
                save_checkpoint(model, path, step=step, config_hash=config_hash)
                checkpoints.append(ToyCheckpoint(step, path))
            if step == config.steps:
                break
            tokens, induction_mask = periodic_batch(
                config.batch_size,
                config.seq_len,
                config.d_vocab,
                min_block=config.min_block,
                bos_token=config.bos_token,
                generator=generator,
            )
            losses = _token_losses(model, tokens)
            loss = losses.mean()
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"toy training diverged at step {step} (loss {loss})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            induction = losses[induction_mask].mean().item()
            curve.append(LossPoint(step, round(loss.item(), 6), round(induction, 6)))
            if progress is not None and (step % 25 == 0 or step == config.steps - 1):
                progress((step + 1) / config.steps, f"step {step + 1}/{config.steps}")
    seconds = time.perf_counter() - started
    (run_dir / LOSS_CURVE_FILE).write_text(
        json.dumps([[p.step, p.loss, p.induction_loss] for p in curve])
    )
    return ToyRun(run_dir, config, tuple(checkpoints), tuple(curve), seconds)


def load_run(run_dir: Path) -> ToyRun:
    """Read a complete run directory back; raise ``ToyRunError`` if it is not complete."""
    from circuitreg.workers.toy.checkpoint import CONFIG_FILE

    run_dir = Path(run_dir)
    marker = run_dir / COMPLETE_MARKER
    if not marker.is_file():
        raise ToyRunError(f"toy run {run_dir} is incomplete (no {COMPLETE_MARKER} marker)")
    payload = json.loads((run_dir / CONFIG_FILE).read_text())
    config = ToyConfig.from_dict(payload["toy_config"])
    checkpoints = []
    for step in config.checkpoint_steps():
        path = run_dir / checkpoint_name(step)
        if not path.is_file():
            raise ToyRunError(f"toy run {run_dir} lacks checkpoint {path.name}")
        checkpoints.append(ToyCheckpoint(step, path))
    curve = tuple(
        LossPoint(int(s), float(loss), float(ind))
        for s, loss, ind in json.loads((run_dir / LOSS_CURVE_FILE).read_text())
    )
    seconds = float(json.loads(marker.read_text()).get("seconds", 0.0))
    return ToyRun(run_dir, config, tuple(checkpoints), curve, seconds)


def ensure_induction_toy(
    config: ToyConfig | None = None, progress: ProgressFn | None = None
) -> ToyRun:
    """The cached run for ``config`` (default ``ToyConfig()``), training it if needed.

    A run directory without its ``COMPLETE`` marker (an interrupted run) is trained again.
    """
    from circuitreg.settings import get_settings

    config = config or ToyConfig()
    run_dir = get_settings().toy_dir / config.config_hash()
    if (run_dir / COMPLETE_MARKER).is_file():
        try:
            return load_run(run_dir)
        except (ToyRunError, OSError, ValueError, KeyError):
            pass  # damaged cache entry: retrain below, which replaces it
    return train_induction(config, progress=progress, out_dir=run_dir)
