"""``circuitreg import`` and ``circuitreg export``: circuits between files and the registry.

``import`` reads any supported format (detected from the content unless ``--format``),
stores the circuit's own edges in the graph store and the dense scores of every edge in
the artifact store (a positional document from ``discover`` also its dense positional
scores, from the file beside it), and prints the circuit id. ``export`` merges them back
and writes the file. Errors print one line saying where in the file and what, and exit with
status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from circuitreg.cli.output import choice
from circuitreg.settings import load_settings_or_exit


def _formats() -> tuple[list[str], list[str]]:
    """Names of the formats that can be imported, and exported (for the help pages)."""
    from circuitreg.services.interchange.formats import default_registry

    registry = default_registry()
    return registry.readable(), registry.writable()


READABLE, WRITABLE = _formats()
FormatOption = Annotated[
    str | None,
    typer.Option("--format", "-f", help="Detected when omitted.", **choice(READABLE, "format")),
]


def import_circuit(
    file: Annotated[Path, typer.Argument(help="The file to import.")],
    format: FormatOption = None,
    model: Annotated[str | None, typer.Option(help="Model name (part of the id).")] = None,
    task: Annotated[str | None, typer.Option(help="Task name (part of the id).")] = None,
    method: Annotated[str | None, typer.Option(help="Discovery method, e.g. eap-ig.")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="Checkpoint label.")] = None,
    ablation: Annotated[str | None, typer.Option(help="Ablation used.")] = None,
    metric: Annotated[str | None, typer.Option(help="Metric used.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the run.")] = None,
    n_layers: Annotated[int | None, typer.Option(help="Layers, if the file lacks it.")] = None,
    n_heads: Annotated[int | None, typer.Option(help="Heads, if the file lacks it.")] = None,
    top_k: Annotated[
        int | None, typer.Option(help="auto-circuit: the k strongest edges form the circuit.")
    ] = None,
    aggregate: Annotated[
        bool, typer.Option(help="neuronpedia: drop positions, summing link weights.")
    ] = False,
) -> None:
    """Import a circuit file into the registry and print its id."""
    from circuitreg.cli.positional import read_positional_file
    from circuitreg.services.artifacts import ArtifactError, ArtifactStore
    from circuitreg.services.interchange import ImportOptions, InterchangeError, import_file
    from circuitreg.services.positional_scores import store_positional_document
    from circuitreg.services.stores.common import StoreError
    from circuitreg.services.stores.factory import open_store

    settings = load_settings_or_exit()
    options = ImportOptions(
        model=model, task=task, method=method, checkpoint=checkpoint, ablation=ablation,
        metric=metric, seed=seed, n_layers=n_layers, n_heads=n_heads, top_k=top_k,
        aggregate=aggregate,
    )  # fmt: skip
    try:
        doc = import_file(file, format, options)
    except InterchangeError as exc:
        typer.echo(f"error: {file}: {exc}", err=True)
        raise typer.Exit(2) from None
    try:  # a positional document from ``discover`` names its dense scores beside it
        positional = read_positional_file(file, doc)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    store = open_store(settings)
    try:
        store.migrate()
        artifacts = ArtifactStore(settings.resolved_artifact_url)
        stored = store_positional_document(store, artifacts, doc, positional)
    except (ArtifactError, StoreError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        store.close()
    typer.echo(stored.stored.circuit_id)


def export_circuit(
    ref: Annotated[str, typer.Argument(help="Circuit id or alias.")],
    format: Annotated[
        str, typer.Option("--format", "-f", help="Format.", **choice(WRITABLE, "format"))
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write.")],
) -> None:
    """Write a stored circuit (with its dense scores) to a file."""
    from circuitreg.services.artifacts import ArtifactError, ArtifactStore
    from circuitreg.services.interchange import InterchangeError, export_file, load_document
    from circuitreg.services.stores.common import StoreError
    from circuitreg.services.stores.factory import open_store

    settings = load_settings_or_exit()
    store = open_store(settings)
    try:
        store.migrate()
        doc = load_document(store, ArtifactStore(settings.resolved_artifact_url), ref)
        for note in export_file(doc, format, out):  # what the format left out (positions)
            typer.echo(f"note: {note}", err=True)
    except (InterchangeError, ArtifactError, StoreError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        store.close()
    typer.echo(str(out))


def json_schema_command(
    write: Annotated[bool, typer.Option(help="Rewrite schema/circuit.schema.json.")] = False,
    check: Annotated[bool, typer.Option(help="Exit 1 if the file is out of date.")] = False,
) -> None:
    """Print (or --write, or --check) the interchange document's JSON Schema."""
    from circuitreg.services.interchange.schema_file import (
        SCHEMA_PATH,
        render_json_schema,
        write_json_schema,
    )

    if write:
        typer.echo(str(write_json_schema()))
    elif check:
        current = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else ""
        if current != render_json_schema():
            typer.echo(f"{SCHEMA_PATH} is out of date: run circuitreg json-schema --write")
            raise typer.Exit(1)
        typer.echo(f"{SCHEMA_PATH} is up to date")
    else:
        typer.echo(render_json_schema(), nl=False)


def list_formats() -> None:
    """List the interchange formats and whether each can be imported and exported."""
    from circuitreg.services.interchange import FORMATS

    for fmt in FORMATS:
        ways = "/".join(w for w, ok in (("import", fmt.reader), ("export", fmt.writer)) if ok)
        typer.echo(f"{fmt.name:13} {ways:13} {fmt.description}")


def register(app: typer.Typer) -> None:
    """Add ``import``, ``export``, ``json-schema`` and ``formats`` to the app."""
    app.command("import")(import_circuit)
    app.command("export")(export_circuit)
    app.command("json-schema")(json_schema_command)
    app.command("formats")(list_formats)
