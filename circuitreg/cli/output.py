"""How commands report failure: one line, and the underlying detail only with ``--verbose``.

A user who mistypes a model name should read "unknown model 'gpt-9'", not four lines of the
hub client's network errors; those stay one flag away for whoever debugs a real outage.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import typer

from circuitreg.workers.models import SPEC_KINDS

if TYPE_CHECKING:
    from circuitreg.schema import CircuitDocument

MODEL_HELP = f"Model spec: {SPEC_KINDS}."

MetricName = Literal["logit_diff", "prob", "kl", "cosine"]


def choice(names: Sequence[str], what: str) -> dict[str, Any]:
    """``typer.Option`` arguments listing ``names`` in the help and refusing anything else.

    For choices known only at run time (the registered formats), where a ``Literal``
    annotation, which typer turns into a click choice, cannot be written.
    """

    def check(value: str | None) -> str | None:
        if value is not None and value not in names:
            raise typer.BadParameter(f"unknown {what} {value!r}; choose one of {', '.join(names)}")
        return value

    return {"metavar": "[" + "|".join(names) + "]", "callback": check}


_verbose = False


def write_document(doc: CircuitDocument, path: Path) -> None:
    """Write atomically: a crash leaves the old file (or none), never half a document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(doc.to_json(), encoding="utf-8")
    tmp.replace(path)


def set_verbose(verbose: bool) -> None:
    """Set by the app's callback from the global ``--verbose`` option.

    Without it, the Hugging Face libraries log only errors (their retry and download notices
    are what ``--verbose`` is for); a verbosity the user set in the environment wins.
    """
    global _verbose
    _verbose = verbose
    if not verbose:
        os.environ.setdefault("HF_HUB_VERBOSITY", "error")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def fail(error: BaseException | str, code: int = 2) -> NoReturn:
    """Print ``error: <message>`` (and its ``detail`` under ``--verbose``) and exit."""
    typer.echo(f"error: {error}", err=True)
    detail = getattr(error, "detail", None)
    if _verbose and detail:
        typer.echo(str(detail), err=True)
    raise typer.Exit(code)


class StepLog:
    """One stderr line per step, stamped with the seconds since the command started."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.started = time.perf_counter()

    def say(self, message: str) -> None:
        """Announce a step before it starts."""
        if self.enabled:
            typer.echo(f"[{time.perf_counter() - self.started:5.1f}s] {message}", err=True)
