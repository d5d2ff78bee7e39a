"""Discovery commands: ``discover``, ``methods`` and ``tasks``.

``circuitreg discover --model SPEC --task SPEC --method NAME --param k=v ... --out c.json``
loads the model, builds the task, scores every edge with the method, selects a circuit
(``--top-k``, ``--threshold``, ``--greedy`` or ``--optimal``; ACDC's own circuit when none is
given) and writes the interchange document (``--store``: into the registry too).
``--positions index|spans`` scores every edge at every position; the dense positional
scores go beside the document. Heavy imports happen inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from circuitreg.cli.output import MODEL_HELP, MetricName, StepLog, fail, write_document
from circuitreg.schema.circuit import AblationKind

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

    from circuitreg.workers.graph import ComputationalGraph
    from circuitreg.workers.methods.base import MethodConfig, ScoreResult
    from circuitreg.workers.methods.registry import MethodInfo
    from circuitreg.workers.tasks.base import TaskData


def parse_params(pairs: list[str]) -> dict[str, str]:
    """``["k=v", ...]`` -> ``{"k": "v"}``; a malformed pair is a ``typer.BadParameter``."""
    params: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise typer.BadParameter(f"{pair!r} is not key=value", param_hint="--param")
        params[key.strip()] = value.strip()
    return params


def _selection(
    top_k: int | None,
    threshold: float | None,
    greedy: int | None,
    optimal: int | None = None,
    time_limit: float | None = None,
) -> Any:
    from circuitreg.workers.methods.selection import Selection

    given = [v is not None for v in (top_k, threshold, greedy, optimal)]
    if sum(given) > 1:
        raise typer.BadParameter("give at most one of --top-k, --threshold, --greedy and --optimal")
    if time_limit is not None and optimal is None:
        raise typer.BadParameter("--time-limit goes with --optimal", param_hint="--time-limit")
    if optimal is not None:
        return Selection("optimal", optimal, time_limit=time_limit)
    if top_k is not None:
        return Selection("top_k", top_k)
    if threshold is not None:
        return Selection("threshold", threshold)
    if greedy is not None:
        return Selection("greedy", greedy)
    return None


def run_discovery(
    model_spec: str,
    task_spec: str,
    method: str,
    params: dict[str, str],
    out: Path,
    *,
    top_k: int | None = None,
    threshold: float | None = None,
    greedy: int | None = None,
    optimal: int | None = None,
    time_limit: float | None = None,
    device: str | None = None,
    seed: int = 0,
    show_progress: bool = True,
    store: bool = False,
) -> Any:
    """Everything ``discover`` does; returns the written ``CircuitDocument``.

    A positional run also writes its dense ``[n_edges, Q]`` scores beside ``out``
    (``cli/positional.py``); ``store`` puts the circuit, its dense scores and its positional
    ones into the configured registry as well.

    With ``show_progress`` every step says what it is doing on stderr before it starts, so
    the seconds spent importing torch or loading a model are not silent.
    """
    steps = StepLog(enabled=show_progress)
    steps.say("importing torch and TransformerLens")
    import torch
    import transformer_lens.model_bridge  # noqa: F401  (seconds of import, announced)

    from circuitreg.cli.positional import store_with_positions, write_positional_file
    from circuitreg.workers.graph import ComputationalGraph
    from circuitreg.workers.methods.base import to_document
    from circuitreg.workers.methods.positional_document import positional_scores, prompt_tokens
    from circuitreg.workers.methods.registry import default_registry
    from circuitreg.workers.models import load_model
    from circuitreg.workers.tasks.base import TaskContext
    from circuitreg.workers.tasks.registry import build_task

    info = default_registry().get(method)
    config = info.config(params)  # a method that scores no positions refuses the option
    selection = _selection(top_k, threshold, greedy, optimal, time_limit)
    torch.manual_seed(seed)
    steps.say(f"loading model {model_spec}")
    loaded = load_model(model_spec, device)
    steps.say(f"building task {task_spec}")
    task = build_task(task_spec, context=TaskContext.from_loaded(loaded))
    summary = ", ".join(f"{k} {v}" for k, v in task.summary.items())
    steps.say(f"task {task.name}: {task.n_examples} prompt pairs{', ' if summary else ''}{summary}")
    graph = ComputationalGraph.from_model(loaded.bridge)
    steps.say(f"scoring {graph.n_edges} edges with {method} on {loaded.device}")
    result = _score(info, loaded.bridge, task, graph, config, show_progress)
    for warning in result.extra.get("warnings", []):
        typer.echo(f"warning: {warning}", err=True)
    document = to_document(
        result,
        graph,
        selection,
        loaded.ref,
        task,
        seed=seed,
        device=str(loaded.device),
        prompt_tokens=prompt_tokens(loaded.bridge, task),
    )
    positional = None
    if result.position_scores is not None and result.positions is not None:
        positional = positional_scores(graph, result.positions, result.position_scores)
        document, dense = write_positional_file(out, document, positional)
        steps.say(f"dense positional scores {positional.scores.shape} -> {dense}")
    write_document(document, out)
    if store:
        steps.say("storing the circuit in the registry")
        stored = store_with_positions(document, positional)
        steps.say(f"stored {stored.stored.circuit_id}")
    return document


def _score(
    info: MethodInfo,
    bridge: TransformerBridge,
    task: TaskData,
    graph: ComputationalGraph,
    config: MethodConfig,
    show_progress: bool,
) -> ScoreResult:
    """Run the method with a progress bar on stderr (per mille, the method's message)."""
    from tqdm import tqdm

    with tqdm(total=1000, desc=info.name, disable=not show_progress, unit="‰") as bar:

        def progress(fraction: float, message: str) -> None:
            # update() redraws at most every mininterval (0.1 s); an explicit refresh per
            # call wrote hundreds of lines a second into a log when stderr is not a terminal.
            bar.set_postfix_str(message[:40], refresh=False)
            bar.update(int(min(max(fraction, 0.0), 1.0) * 1000) - bar.n)

        return info.fn(bridge, task, graph, config, progress)


def discover(
    model: str = typer.Option(..., help=MODEL_HELP),
    task: str = typer.Option(..., help="Task spec, e.g. induction:seq_len=8,n=64"),
    method: str = typer.Option(..., help="Method name (see `circuitreg methods`)."),
    out: Path = typer.Option(..., help="Where to write the circuit JSON."),
    param: list[str] = typer.Option([], help="Method parameter k=v (repeatable)."),
    ablation: AblationKind | None = typer.Option(None, help="Ablation (default: the method's)."),
    metric: MetricName | None = typer.Option(None, help="Metric (default: the method's)."),
    top_k: int | None = typer.Option(None, help="Keep the k highest-|score| edges."),
    threshold: float | None = typer.Option(None, help="Keep edges with |score| >= t."),
    greedy: int | None = typer.Option(None, help="Grow k edges back from the logits."),
    optimal: int | None = typer.Option(
        None, help="The connected k edges with the most |score| (MILP, HiGHS)."
    ),
    time_limit: float | None = typer.Option(
        None, help="Seconds the --optimal solver may take (default 30)."
    ),
    device: str | None = typer.Option(None, help="cpu, cuda:N or auto."),
    seed: int = typer.Option(0, help="Torch seed, recorded in the circuit."),
    quiet: bool = typer.Option(False, help="No progress bar or step lines."),
    positions: str | None = typer.Option(
        None,
        help="Score every edge per position: index (token t of every prompt) or spans (the "
        "task's named spans, e.g. S1/IO/S2/END; prompts align by span).",
    ),
    store: bool = typer.Option(
        False, help="Also store the circuit (and its dense scores) in the configured registry."
    ),
) -> None:
    """Score every edge with a method and write the selected circuit."""
    params = parse_params(param)
    if positions is not None:
        params["positions"] = positions
    if ablation is not None:
        params["ablation"] = ablation
    if metric is not None:
        params["metric"] = metric
    try:
        document = run_discovery(
            model, task, method, params, out,
            top_k=top_k, threshold=threshold, greedy=greedy,
            optimal=optimal, time_limit=time_limit,
            device=device, seed=seed, show_progress=not quiet, store=store,
        )  # fmt: skip
    except (ValueError, KeyError, RuntimeError) as exc:
        fail(exc)
    kept = len(document.circuit_edges())
    note = document.provenance.extra.get("selection", {}).get("note")
    if note:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"{document.id}: {kept} of {len(document.edges)} edges -> {out}")


def methods(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the discovery methods and their options."""
    from circuitreg.workers.methods.registry import default_registry

    described = default_registry().describe()
    if as_json:
        typer.echo(json.dumps(described, indent=2, default=str))
        return
    for entry in described:
        typer.echo(f"{entry['name']}: {entry['description']}")
        for opt in entry["options"]:
            typer.echo(
                f"    {opt['name']} ({opt['type']}, default {opt['default']!r}) {opt['help']}"
            )


def tasks(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the discovery tasks and their options."""
    from circuitreg.workers.tasks.registry import default_registry

    described = default_registry().describe()
    if as_json:
        typer.echo(json.dumps(described, indent=2))
        return
    for entry in described:
        opts = ",".join(f"{k}={v}" for k, v in entry["options"].items())
        typer.echo(f"{entry['name']}:{opts}  {entry['description']}")


def register(app: typer.Typer) -> None:
    """Add the discovery commands to the app."""
    app.command()(discover)
    app.command()(methods)
    app.command()(tasks)
