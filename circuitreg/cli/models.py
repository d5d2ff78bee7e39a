"""Model commands: ``train-toy``, ``heads``, ``groundtruth`` and ``make-random-model``.

Heavy imports (torch, TransformerLens) happen inside the command bodies so that the API
container, which has neither, can still build the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from circuitreg.cli.output import MODEL_HELP, choice, fail
from circuitreg.workers.random_models import SHAPES

if TYPE_CHECKING:
    from circuitreg.workers.toy import ToyRun


def make_random_model(
    shape: str = typer.Argument(..., help="Model shape.", **choice(list(SHAPES), "shape")),
    directory: Path = typer.Argument(..., help="New (or empty) directory to write."),
    seed: int = typer.Option(0, help="Seed of the random initialisation."),
    n_layers: int | None = typer.Option(None, help="Fewer layers than the shape (quick runs)."),
) -> None:
    """Write a randomly initialised Hugging Face checkpoint of a real model's shape.

    It costs what the real model costs (speed, memory), so benchmarks run on real shapes
    without a hub; load it as ``--model DIR``.
    """
    from circuitreg.workers.random_models import RandomModelError, write_random_model

    try:
        written = write_random_model(shape, directory, seed=seed, n_layers=n_layers)
    except RandomModelError as exc:
        fail(exc)
    typer.echo(f"wrote a random {shape} ({SHAPES[shape].note}) to {written}")


def train_toy(
    kind: str = typer.Argument("induction", help="Which toy: only 'induction' exists."),
    seed: int = typer.Option(0, help="Seed of initialisation and data."),
    steps: int = typer.Option(500, help="Training steps."),
    d_model: int = typer.Option(64, help="Residual stream width."),
    n_heads: int = typer.Option(4, help="Heads per layer."),
    d_vocab: int = typer.Option(64, help="Vocabulary size (token 0 is BOS)."),
    seq_len: int = typer.Option(12, help="Longest repeated block."),
    out: Path | None = typer.Option(None, help="Write here instead of the toy cache."),
    force: bool = typer.Option(False, help="Retrain even if the cache has this run."),
) -> None:
    """Train the 2-layer attention-only induction model (cached by config hash)."""
    from tqdm import tqdm

    from circuitreg.settings import load_settings_or_exit
    from circuitreg.workers.toy import (
        ToyConfig,
        ToyConfigError,
        ensure_induction_toy,
        train_induction,
    )

    if kind != "induction":
        raise typer.BadParameter(f"unknown toy {kind!r}; the only toy is 'induction'")
    load_settings_or_exit()
    try:
        config = ToyConfig(
            seed=seed,
            steps=steps,
            d_model=d_model,
            n_heads=n_heads,
            d_vocab=d_vocab,
            seq_len=seq_len,
            min_block=min(ToyConfig.min_block, seq_len),
        )
    except ToyConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    with tqdm(total=100, desc="train toy", unit="%", leave=False) as bar:

        def progress(fraction: float, message: str) -> None:
            bar.set_postfix_str(message, refresh=False)  # update() redraws, rate-limited
            bar.update(round(100 * fraction) - bar.n)

        if out is not None or force:
            run = train_induction(config, progress=progress, out_dir=out)
        else:
            run = ensure_induction_toy(config, progress=progress)
    _report_toy_run(run)


def _report_toy_run(run: ToyRun) -> None:
    """Say where the run is, when its phase change came, and which heads it grew.

    The best previous-token and induction heads are what tell a user the toy learned the
    circuit the demo looks for, so they are scored on the final checkpoint here.
    """
    from circuitreg.workers.models import load_model
    from circuitreg.workers.toy import detect_heads

    typer.echo(f"run: {run.run_dir} (config {run.config_hash}, {run.seconds:.1f} s training)")
    typer.echo(f"checkpoints at steps: {[c.step for c in run.checkpoints]}")
    last = run.loss_curve[-1]
    typer.echo(
        f"induction phase change at step {run.phase_change_step()}; final loss "
        f"{last.loss:.3f}, repeated-block loss {last.induction_loss:.3f}"
    )
    scores = detect_heads(load_model(str(run.final.path), "cpu").bridge, seq_len=run.seq_len)
    for kind_name in ("previous_token_head", "induction_head"):
        name, score = scores[kind_name][0]
        typer.echo(f"best {kind_name.replace('_', ' ')}: {name} ({score:.2f})")


def heads(
    model: str = typer.Option(..., "--model", help=MODEL_HELP),
    top: int = typer.Option(3, help="Heads to show per kind."),
    device: str | None = typer.Option(None, help="cpu, cuda:N or auto."),
) -> None:
    """Score every head as previous-token, duplicate-token and induction head."""
    from circuitreg.workers.models import ModelLoadError, load_model
    from circuitreg.workers.toy import detect_heads

    try:
        loaded = load_model(model, device)
    except ModelLoadError as exc:
        raise typer.BadParameter(str(exc)) from None
    seq_len = loaded.info.get("seq_len")
    scores = detect_heads(
        loaded.bridge,
        seq_len=seq_len if isinstance(seq_len, int) else None,
        bos_token=int(loaded.info.get("bos_token", 0)),
    )
    for kind_name, ranked in scores.items():
        shown = ", ".join(f"{n} {s:.2f}" for n, s in ranked[:top])
        typer.echo(f"{kind_name}: {shown}")


def groundtruth(
    model: str = typer.Option(..., "--model", help="tracr:<program> or tracr:file.py:fn"),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """Print the true edges of a compiled tracr program, read off its weights."""
    from circuitreg.workers.models import ModelLoadError
    from circuitreg.workers.tracr.groundtruth import ground_truth_edges
    from circuitreg.workers.tracr.loading import resolve_tracr_fixture

    if not model.startswith("tracr:"):
        raise typer.BadParameter(f"ground truth exists only for tracr models, not {model!r}")
    try:
        fixture = resolve_tracr_fixture(model)
    except ModelLoadError as exc:
        raise typer.BadParameter(str(exc)) from None
    edges = ground_truth_edges(fixture)
    if as_json:
        typer.echo(json.dumps(list(edges)))
    else:
        typer.echo("\n".join(edges))


def register(app: typer.Typer) -> None:
    """Add the model commands to the app."""
    app.command("make-random-model")(make_random_model)
    app.command("train-toy")(train_toy)
    app.command("heads")(heads)
    app.command("groundtruth")(groundtruth)
