"""The ``circuitreg`` command line.

Each area registers its own commands from its own module. Commands import their heavy
dependencies (torch, TransformerLens) inside the function body, so that ``circuitreg serve``
on the API container never loads them.
"""

from __future__ import annotations

import gc
import importlib

import typer

app = typer.Typer(
    name="circuitreg",
    help="Circuit Registry: discover, validate, store and query transformer circuits.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Click's plain help: choices and defaults beside each option, and no type label on
    # flags (the rich panels printed ``--help <bool>`` on every page).
    rich_markup_mode=None,
)


@app.callback()
def _start(
    ctx: typer.Context,
    verbose: bool = typer.Option(
        False, "--verbose", help="Under an error, also print what the underlying library said."
    ),
) -> None:
    """Check the settings before any command runs: a bad value stops with one line."""
    from circuitreg.cli.output import set_verbose
    from circuitreg.settings import load_settings_or_exit

    set_verbose(verbose)
    if not ctx.resilient_parsing:
        load_settings_or_exit()


# One module per area; each defines ``register(app)``. Listed here, in one place.
COMMAND_MODULES = (
    "circuitreg.cli.core",
    "circuitreg.cli.models",
    "circuitreg.cli.discovery",
    "circuitreg.cli.validation",
    "circuitreg.cli.store",
    "circuitreg.cli.worker",
    "circuitreg.cli.api",
)

for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def main() -> None:
    """Entry point of the ``circuitreg`` script."""
    try:
        app()
    finally:
        # Interpreter shutdown garbage-collects every object torch and transformers made:
        # 2 s after the demo's last line (measured). Stores and files are closed by then, so
        # the objects are frozen out of that final collection; refcounting still frees them.
        gc.freeze()
