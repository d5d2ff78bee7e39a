"""The ``circuitreg`` command line.

Each area registers its own commands from its own module. Commands import their heavy
dependencies (torch, TransformerLens) inside the function body, so that ``circuitreg serve``
on the API container never loads them.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="circuitreg",
    help="Circuit Registry: discover, validate, store and query transformer circuits.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _start(ctx: typer.Context) -> None:
    """Check the settings before any command runs: a bad value stops with one line."""
    from circuitreg.settings import load_settings_or_exit

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
    app()
