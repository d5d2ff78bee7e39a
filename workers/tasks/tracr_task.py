"""The discovery task for a compiled tracr program: ``tracr:program=reverse,n=64,seed=0``.

Clean prompts are distinct inputs drawn so that every output the program gives occurs about
equally often (``balance=outputs``, the default; ``balance=none``: uniform over the distinct
inputs), corrupted prompts are drawn the same way independently (resampling, never the clean
input itself), and the metric is read at every non-BOS position whose output RASP defines
(``TracrFixture.defined_positions``). Balancing is what lets a method see a program's rare
branch: of the 213 length-4 reference inputs of tracr's ``shuffle_dyck2``, 9 are balanced
(output True), so 32 uniform draws held one or two of them and ACDC dropped the edges only
those inputs use (AUC 0.85); balanced, every edge is exercised. Answers
are the program's outputs as RASP evaluated them when the fixture was compiled: prompts are
drawn from the fixture's full-length reference samples, so no answer comes from the model
under study. For a categorical program the distractor at a position is the corrupted input's
output there (or the next output class when the two agree), so ``logit_diff`` compares the
right class with a wrong one. A numerical program's logit 0 is its value and logit 1 a
constant zero, so ``logit_diff`` (answer 0, distractor 1) reads the value itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from circuitreg.workers.tasks.base import TaskContext, TaskData, TaskError, TaskInfo

if TYPE_CHECKING:
    from circuitreg.workers.tracr.fixture import TracrFixture, TracrSample

BALANCE_MODES = ("outputs", "none")


def tracr_task(
    program: str,
    n: int = 64,
    seed: int = 0,
    length: int | None = None,
    balance: str = "outputs",
) -> TaskData:
    """Build the task for ``program`` (a committed fixture name or ``path.py:function``).

    ``length`` picks prompts of that many tokens (default: the compiled maximum). The length
    matters for what a method can see: on full-length prompts a program's length
    computation carries the same value in every prompt and under zero ablation (on
    ``reverse`` no method scores it), while on shorter prompts it is visible.
    """
    if n < 1:
        raise TaskError(f"tracr task needs n >= 1, got {n}")
    if balance not in BALANCE_MODES:
        raise TaskError(f"tracr task balance must be one of {BALANCE_MODES}, got {balance!r}")
    fixture = _fixture(program)
    length = fixture.max_seq_len if length is None else length
    defined = _read_positions(fixture, length)
    outputs_at = [p - 1 for p in defined]  # output index of each read position
    pool = _input_pool(fixture, length)
    clean_idx, corrupt_idx = _draw_pairs(fixture, pool, outputs_at, n, seed, balance)
    clean = torch.stack([fixture.encode(pool[i].inputs) for i in clean_idx.tolist()])
    corrupted = torch.stack([fixture.encode(pool[i].inputs) for i in corrupt_idx.tolist()])
    positions = torch.tensor(defined).expand(n, -1).clone()
    answers, distractors, metric_note = _answers(fixture, pool, outputs_at, clean_idx, corrupt_idx)
    return TaskData(
        name="tracr",
        spec={
            "program": program,
            "n": n,
            "seed": seed,
            "length": length,
            "balance": balance,
            "fixture": fixture.name,
        },
        clean=clean,
        corrupted=corrupted,
        positions=positions,
        answers=answers,
        distractors=distractors,
        corruption=(
            f"tracr/{fixture.name}: distinct inputs of length {length} resampled from the "
            f"vocabulary ({_BALANCE_NOTES[balance]}); {metric_note}"
        ),
    )


def _fixture(program: str) -> TracrFixture:
    """The compiled program, its failure to load being a task error (the task is what the
    user asked for)."""
    from circuitreg.workers.models import ModelLoadError
    from circuitreg.workers.tracr.loading import resolve_tracr_fixture

    try:
        return resolve_tracr_fixture(f"tracr:{program}")
    except ModelLoadError as exc:
        raise TaskError(f"tracr task: {exc}") from None


def _read_positions(fixture: TracrFixture, length: int) -> list[int]:
    """The positions of ``length``-token prompts whose output RASP defines, where the
    metric is read; a length the program was not compiled for, or one with no defined
    output, is refused."""
    if not 1 <= length <= fixture.max_seq_len:
        raise TaskError(
            f"tracr task length must be between 1 and {fixture.max_seq_len} for "
            f"{fixture.name!r}, got {length}"
        )
    defined = fixture.defined_positions(length)
    if not defined:
        raise TaskError(
            f"tracr program {fixture.name!r} defines no output at any position of length "
            f"{length} inputs (RASP gives None everywhere)"
        )
    return defined


def _input_pool(fixture: TracrFixture, length: int) -> list[TracrSample]:
    """The fixture's distinct inputs of ``length`` tokens (at least two, to corrupt with)."""
    distinct = {s.inputs: s for s in fixture.samples if len(s.inputs) == length}
    pool = list(distinct.values())
    if len(pool) < 2:
        raise TaskError(
            f"tracr program {fixture.name!r} has fewer than 2 distinct inputs of length {length}"
        )
    return pool


def _draw_pairs(
    fixture: TracrFixture,
    pool: list[TracrSample],
    outputs_at: list[int],
    n: int,
    seed: int,
    balance: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices into ``pool`` of ``n`` clean and corrupted inputs, never the same input."""
    gen = torch.Generator().manual_seed(seed)
    if balance == "outputs" and fixture.output_encoding is not None:
        keys = [tuple(str(s.outputs[j]) for j in outputs_at) for s in pool]
    else:  # numerical outputs are values, not classes: every input is its own group
        keys = [tuple(map(str, s.inputs)) for s in pool]
    clean_idx = _balanced_draw(keys, n, gen)
    corrupt_idx = _balanced_draw(keys, n, gen)
    for i in torch.nonzero(corrupt_idx == clean_idx).flatten().tolist():
        shift = int(torch.randint(1, len(pool), (1,), generator=gen))
        corrupt_idx[i] = (clean_idx[i] + shift) % len(pool)
    return clean_idx, corrupt_idx


def _answers(
    fixture: TracrFixture,
    pool: list[TracrSample],
    outputs_at: list[int],
    clean_idx: torch.Tensor,
    corrupt_idx: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Answer and distractor logits per read position, and how the metric reads them."""
    n, k = len(clean_idx), len(outputs_at)
    if fixture.output_encoding is None:
        note = "numerical output: logit_diff reads the program's value"
        return torch.zeros(n, k, dtype=torch.long), torch.ones(n, k, dtype=torch.long), note
    encoding = fixture.output_encoding

    def classes(index: torch.Tensor) -> torch.Tensor:
        try:
            return torch.tensor(
                [[encoding[str(pool[i].outputs[j])] for j in outputs_at] for i in index.tolist()]
            )
        except KeyError as exc:
            raise TaskError(
                f"tracr program {fixture.name!r}: output {exc.args[0]!r} has no logit"
            ) from None

    answers, other = classes(clean_idx), classes(corrupt_idx)
    distractors = torch.where(other != answers, other, (answers + 1) % len(encoding))
    return answers, distractors, "categorical output: distractor is the corrupted input's output"


_BALANCE_NOTES = {
    "outputs": "each output equally often",
    "none": "uniform over the distinct inputs",
}


def _balanced_draw(keys: list[tuple[str, ...]], n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` indices into ``keys`` that visit every group (equal keys) in turn, in a random
    group order and a random order within each group, so groups occur equally often (to
    within one) and an input repeats only once its group is exhausted."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    members = [
        [g[i] for i in torch.randperm(len(g), generator=gen).tolist()] for g in groups.values()
    ]
    order = [members[i] for i in torch.randperm(len(members), generator=gen).tolist()]
    drawn = [
        order[i % len(order)][(i // len(order)) % len(order[i % len(order)])] for i in range(n)
    ]
    return torch.tensor(drawn, dtype=torch.long)


def build_tracr(options: dict[str, str], context: TaskContext) -> TaskData:
    """Registry builder: ``tracr:reverse`` or ``tracr:program=reverse,n=64,length=4``."""
    program = options.get("program") or options.get("")
    if not program:
        raise TaskError("tracr task needs a program, e.g. tracr:reverse")
    try:
        n, seed = int(options.get("n", "64")), int(options.get("seed", "0"))
        raw_length = options.get("length", "max")
        balance = options.get("balance", "outputs")
        length = None if raw_length == "max" else int(raw_length)
    except ValueError as exc:
        raise TaskError(
            f"tracr task options n and seed must be integers, length an integer or max: {exc}"
        ) from None
    task = tracr_task(program, n=n, seed=seed, length=length, balance=balance)
    if int(task.clean.max()) >= context.d_vocab:
        raise TaskError(
            f"tracr program {program!r} uses token ids up to {int(task.clean.max())}, but the "
            f"model has d_vocab={context.d_vocab}: load the model tracr:{program}"
        )
    return task


TASKS = (
    TaskInfo(
        name="tracr",
        builder=build_tracr,
        options={"program": "", "n": "64", "seed": "0", "length": "max", "balance": "outputs"},
        description="Outputs of a compiled tracr program (use with the model tracr:<program>)",
        positional="program",
    ),
)
