"""Validation commands: ``validate`` (measure a circuit, keep the results in its JSON) and
``compare`` (the consistency report of two circuits).

``circuitreg validate circuit.json --model SPEC --task SPEC --ablation zero`` appends the new
results to the document (earlier results, under other ablations, are kept), rewrites it
atomically and draws the faithfulness curve and control table beside it as PNG and SVG.
``compare`` is torch-free. Heavy imports happen inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from circuitreg.cli.output import MODEL_HELP, MetricName, StepLog, fail, write_document
from circuitreg.schema.circuit import AblationKind

if TYPE_CHECKING:
    from circuitreg.schema import CircuitDocument, ConsistencyReport, ValidationResult


class CircuitFileError(ValueError):
    """A circuit file that is missing or not a circuit document."""


def read_document(path: Path) -> CircuitDocument:
    """Parse a circuit JSON file; a missing or invalid file is a ``CircuitFileError``."""
    from pydantic import ValidationError as SchemaError

    from circuitreg.schema import CircuitDocument

    try:
        return CircuitDocument.from_json(path.read_bytes())
    except FileNotFoundError:
        raise CircuitFileError(f"{path} does not exist") from None
    except SchemaError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "document"
        raise CircuitFileError(
            f"{path} is not a circuit document: {where}: {first['msg']}"
        ) from None


def run_validation(
    circuit: Path,
    model_spec: str,
    task_spec: str,
    *,
    ablation: str = "resample",
    metric: str | None = None,
    device: str | None = None,
    stability_runs: int = 0,
    plots: bool = True,
    other_model: bool = False,
    out: Path | None = None,
    show_progress: bool = True,
) -> tuple[CircuitDocument, tuple[ValidationResult, ...], list[Path]]:
    """Everything ``validate`` does; returns the new document, its new results and plots.

    Each step says what it does on stderr before it starts (``show_progress``).
    """
    steps = StepLog(enabled=show_progress)
    doc = read_document(circuit)
    steps.say("importing torch and TransformerLens")
    import transformer_lens.model_bridge  # noqa: F401  (seconds of import, announced)

    from circuitreg.services.analysis.plots import write_validation_plots
    from circuitreg.workers.graph import ComputationalGraph
    from circuitreg.workers.models import load_model
    from circuitreg.workers.tasks.base import TaskContext
    from circuitreg.workers.tasks.registry import build_task
    from circuitreg.workers.validation import validate, validate_stability

    steps.say(f"loading model {model_spec}")
    loaded = load_model(model_spec, device)
    if not other_model:
        _require_same_weights(circuit, doc.model.revision, model_spec, loaded.ref.revision)
    steps.say(f"building task {task_spec}")
    task = build_task(task_spec, context=TaskContext.from_loaded(loaded))
    graph = ComputationalGraph.from_model(loaded.bridge)
    chosen_metric = metric or doc.metric
    steps.say(f"validating {doc.id} ({graph.n_edges} edges, {ablation} ablation)")
    results = validate(
        loaded.bridge,
        task,
        graph,
        doc,
        ablation=ablation,
        metric=chosen_metric,
        progress=lambda fraction, message: steps.say(f"  {message}"),
    )
    if stability_runs:
        steps.say(f"stability: re-running {doc.method.name} {stability_runs} times")
        results += (validate_stability(loaded.bridge, task, graph, doc, n_runs=stability_runs),)
    validated = doc.with_validation(*results)
    target = out or circuit
    target.parent.mkdir(parents=True, exist_ok=True)
    write_document(validated, target)
    written = write_validation_plots(validated, target) if plots else []
    return validated, results, written


def _require_same_weights(
    circuit: Path, theirs: str | None, model_spec: str, ours: str | None
) -> None:
    """Refuse weights other than those the circuit was found in, when both are known.

    A circuit's edges are a claim about particular weights; validating it on another
    revision would measure a different model, so that takes ``--other-model``.
    """
    if theirs and ours and theirs != ours:
        raise ValueError(
            f"{circuit} was found in weights {theirs[:12]}..., but {model_spec} has "
            f"{ours[:12]}...; pass --other-model to validate it on these weights anyway"
        )


def summarise(result: ValidationResult) -> str:
    """One line per result: its headline number and whether it passed."""
    values = result.values
    headline: dict[str, Any] = {
        "faithfulness": values.get("faithfulness"),
        "fidelity": values.get("fidelity"),
        "faithfulness_curve": f"CPR {values.get('cpr', 0):.3f}, CMD {values.get('cmd', 0):.3f}",
        "ablation_controls": ", ".join(
            f"{row['name']} {row['normalised']:.3f}{'' if row['held'] else ' (!)'}"
            for row in values.get("rows", [])
        ),
        "minimality": f"redundant {values.get('redundant', [])}",
        "completeness": f"max gap {values.get('max_gap', 0):.3f}",
        "stability": f"stable {values.get('stable_fraction', 0):.3f}",
        "suffix_ablation": _suffix_headline(values),
    }
    shown = headline.get(result.name, "")
    if isinstance(shown, float):
        shown = f"{shown:.4f}"
    if "gap" in values:
        shown = f"{shown} (gap {values['gap']:.4g})"
    if values.get("undefined"):
        shown = f"undefined: {values['undefined']}"
    verdict = {True: "pass", False: "FAIL", None: "-"}[result.passed]
    return f"{result.name:<20} {verdict:<5} {shown}"


def _suffix_headline(values: dict[str, Any]) -> str:
    """``|dlogits| circuit 3.2 +- 0.1 vs random 0.8 +- 0.05 (4 heads)``, or the note."""

    def spread(part: dict[str, Any]) -> str:
        error = part.get("standard_error")
        return f"{part['mean']:.4g}" + ("" if error is None else f" +- {error:.2g}")

    circuit, control = values.get("circuit"), values.get("control")
    if not values.get("n_heads") or not isinstance(circuit, dict):
        return str(values.get("note", ""))
    shown = f"|dlogits| circuit {spread(circuit)}"
    if isinstance(control, dict):
        return f"{shown} vs random {spread(control)} ({values['n_heads']} heads)"
    return f"{shown}; {values.get('note', '')}"


def format_report(report: ConsistencyReport) -> str:
    """The consistency report as aligned lines."""

    def fmt(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    rows = report.model_dump(mode="json")
    width = max(len(k) for k in rows)
    return "\n".join(f"{k:<{width}}  {fmt(v)}" for k, v in rows.items())


def validate_command(
    circuit: Path = typer.Argument(..., help="Circuit JSON; results are added to it."),
    model: str = typer.Option(..., help=MODEL_HELP),
    task: str = typer.Option(..., help="Task spec, e.g. induction:seq_len=8,n=64"),
    ablation: AblationKind = typer.Option("resample", help="Ablation."),
    metric: MetricName | None = typer.Option(None, help="Metric (default: the circuit's)."),
    device: str | None = typer.Option(None, help="cpu, cuda:N or auto."),
    stability: int = typer.Option(0, help="Re-run the method N times for stability (0: skip)."),
    plots: bool = typer.Option(True, help="Write PNG and SVG charts beside the JSON."),
    other_model: bool = typer.Option(False, help="Allow weights other than the circuit's."),
    out: Path | None = typer.Option(None, help="Write here instead of updating CIRCUIT."),
    quiet: bool = typer.Option(False, help="No step lines."),
) -> None:
    """Validate a circuit and keep the results in its document."""
    if stability < 0 or stability == 1:
        fail(f"--stability {stability}: give 0 (skip) or at least 2 runs")
    try:
        doc, results, written = run_validation(
            circuit, model, task,
            ablation=ablation, metric=metric, device=device, stability_runs=stability,
            plots=plots, other_model=other_model, out=out, show_progress=not quiet,
        )  # fmt: skip
    except (ValueError, KeyError, RuntimeError) as exc:
        fail(exc)
    typer.echo(f"{doc.id}: {ablation} ablation, {results[0].metric}")
    for result in results:
        typer.echo("  " + summarise(result))
    typer.echo(f"-> {out or circuit}")
    for path in written:
        typer.echo(f"-> {path}")


def compare(
    a: Path = typer.Argument(..., help="First circuit JSON."),
    b: Path = typer.Argument(..., help="Second circuit JSON."),
    alignment: str = typer.Option("auto", help="auto, canonical, relative_depth or roles."),
    tolerance: float = typer.Option(0.1, help="Largest faithfulness gap that agrees."),
    depth_buckets: int | None = typer.Option(None, help="Buckets for relative depth."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print the consistency report of two circuits."""
    from circuitreg.services.analysis import compare_circuits

    if alignment not in ("auto", "canonical", "relative_depth", "roles"):
        fail(f"--alignment {alignment!r} is not auto, canonical, relative_depth or roles")
    try:
        first, second = read_document(a), read_document(b)
        report = compare_circuits(
            first,
            second,
            alignment=alignment,  # type: ignore[arg-type]
            tolerance=tolerance,
            depth_buckets=depth_buckets,
        )
    except ValueError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        typer.echo(f"{first.id} vs {second.id}")
        typer.echo(format_report(report))


def register(app: typer.Typer) -> None:
    """Add the validation commands to the app."""
    app.command(name="validate")(validate_command)
    app.command()(compare)
