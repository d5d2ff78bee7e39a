"""Helpers shared by the runtime tests: a tiny real toy checkpoint and migrated databases."""

from __future__ import annotations

from pathlib import Path

from circuitreg.migrations.relational import upgrade
from circuitreg.services.queue import JobSpec

TINY = {"n_layers": 2, "d_model": 32, "n_heads": 2, "d_vocab": 24, "seq_len": 6, "seed": 0}


def tiny_toy_checkpoint(directory: Path) -> Path:
    """An untrained 2-layer attention-only toy checkpoint (real weights, real loader)."""
    from circuitreg.workers.toy.checkpoint import (
        checkpoint_name,
        new_native_model,
        save_checkpoint,
        write_run_config,
    )
    from circuitreg.workers.toy.config import ToyConfig

    config = ToyConfig(**TINY)  # type: ignore[arg-type]
    directory.mkdir(parents=True, exist_ok=True)
    write_run_config(directory, config)
    path = directory / checkpoint_name(0)
    save_checkpoint(new_native_model(config), path, step=0, config_hash=config.config_hash())
    return path


def discovery_spec(model: str, **params: object) -> JobSpec:
    """A small but real discovery job: EAP on induction prompts, top 12 edges."""
    return JobSpec(
        kind="discovery",
        model=model,
        task="induction:seq_len=6,n=16",
        method="eap",
        params={"selection": {"mode": "top_k", "value": 12}, **params},
    )


def migrate(url: str) -> None:
    """Bring a database to head through the Alembic chain (as `circuitreg migrate` does)."""
    upgrade(url)
