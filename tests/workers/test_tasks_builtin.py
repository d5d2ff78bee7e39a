"""Tasks: induction corruptions, JSONL pairs, text generators and the registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformer_lens.model_bridge import TransformerBridge
from transformers import PreTrainedTokenizerFast

from circuitreg.workers.engine import InterventionEngine
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.tasks import generators
from circuitreg.workers.tasks.base import TaskContext, TaskData, TaskError, parse_task_spec
from circuitreg.workers.tasks.induction import induction_task
from circuitreg.workers.tasks.registry import build_task, default_registry

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def word_tokenizer() -> PreTrainedTokenizerFast:
    """A tiny word-level tokenizer covering the generators' words (no model hub here)."""
    pre = pre_tokenizers.Whitespace()
    texts = [*generators.NAMES, *generators.PLACES, *generators.OBJECTS, *generators.WORDS]
    texts += [*generators.IOI_TEMPLATES, "The war lasted from the year 17"]
    texts += [f"17{y:02d} {y:02d}" for y in range(100)]
    texts += [
        'def f(self, a, b, c):\n    """Do it.\n\n    :param a: the first\n    :param b: the second'
    ]
    vocab = {"[UNK]": 0, "[BOS]": 1}
    for text in texts:
        for piece, _ in pre.pre_tokenize_str(text):
            vocab.setdefault(piece, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", bos_token="[BOS]")


def test_induction_layout_and_answers() -> None:
    task = induction_task(seq_len=5, n=3, d_vocab=30, bos_token_id=0)
    assert task.clean.shape == (3, 11) and task.positions.shape == (3, 4)
    assert torch.equal(task.clean[:, 1:6], task.clean[:, 6:11])
    assert (task.clean[:, 1:] != 0).all() and (task.clean[:, 0] == 0).all()
    rows = torch.arange(3)[:, None]
    assert torch.equal(task.answers, task.clean[rows, task.positions + 1])
    assert (task.answers != task.distractors).all()
    assert task.dataset_hash == induction_task(5, 3, 30, bos_token_id=0).dataset_hash
    assert task.dataset_hash != induction_task(5, 3, 30, bos_token_id=0, seed=1).dataset_hash


def test_first_corruption_reveals_and_second_hides_the_first_occurrence() -> None:
    """With corrupt=second every writer's output over the first copy is identical in both
    runs, so no method can see edges carrying it; corrupt=first changes exactly that part."""
    model = TransformerBridge.boot_native(dict(
        n_layers=2, d_model=32, n_heads=2, d_head=16, d_vocab=30, n_ctx=24,
        attn_only=True, act_fn="gelu", normalization_type=None, seed=0,
    ))  # fmt: skip
    graph = ComputationalGraph.from_model(model)
    for mode, first_copy_changes in (("first", True), ("second", False)):
        task = induction_task(seq_len=5, n=4, d_vocab=30, corrupt=mode)
        assert mode in task.corruption
        batch = next(InterventionEngine(model, graph, task).batches())
        first_copy = batch.delta[:, :5]  # [N, positions of the first copy, writers, d]
        assert bool((first_copy.abs() > 0).any()) == first_copy_changes


def test_jsonl_task_from_token_ids(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    rows = [
        {"clean": [1, 2, 3], "corrupted": [4, 5, 6], "answer": 7, "distractor": 8},
        {"clean": [1, 2], "corrupted": [4, 5], "answer": 9, "distractor": 8},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    task = build_task(f"jsonl:{path}", context=TaskContext(d_vocab=20))
    assert task.clean.tolist() == [[1, 2, 3], [1, 2, 0]]  # right-padded
    assert task.positions.tolist() == [[2], [1]]
    assert task.answers.tolist() == [[7], [9]] and task.distractors is not None
    assert str(path.name) in task.corruption


@pytest.mark.parametrize(
    ("mode", "first_row", "second_row", "added"),
    [
        # A file that already starts with BOS (as TransformerLens users write them) is kept.
        ("auto", [0, 1, 2, 3], [0, 5, 6], "1 of 2 prompts"),
        ("true", [0, 0, 1, 2, 3], [0, 5, 6], "2 of 2 prompts"),
        ("false", [0, 1, 2, 3], [5, 6], "0 of 2 prompts"),
    ],
)
def test_jsonl_prepend_bos_modes(
    tmp_path: Path, mode: str, first_row: list[int], second_row: list[int], added: str
) -> None:
    path = tmp_path / "pairs.jsonl"
    rows = [
        {"clean": [0, 1, 2, 3], "corrupted": [0, 4, 2, 3], "answer": 7},
        {"clean": [5, 6], "corrupted": [4, 6], "answer": 9},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    context = TaskContext(d_vocab=20, bos_token_id=0)
    task = build_task(f"jsonl:path={path},prepend_bos={mode}", context=context)
    assert task.clean[0].tolist() == first_row
    assert task.clean[1].tolist()[: len(second_row)] == second_row
    width = len(first_row)
    lengths = f"{len(second_row)}-{width}"
    assert task.summary == {"tokens": lengths, "prepend_bos": mode, "bos_added": added}
    assert task.spec["prepend_bos"] == mode and task.describe()["summary"] == task.summary


def test_jsonl_prepend_bos_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"clean": [1], "corrupted": [2], "answer": 3}) + "\n")
    with pytest.raises(TaskError, match="give one of auto, true, false"):
        build_task(f"jsonl:path={path},prepend_bos=yes", context=TaskContext(d_vocab=20))
    with pytest.raises(TaskError, match="no BOS token"):
        build_task(f"jsonl:path={path},prepend_bos=true", context=TaskContext(d_vocab=20))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"clean": [1, 2], "corrupted": [1], "answer": 3}, "same length"),
        ({"clean": [1, 2], "corrupted": [1, 2]}, "missing answer"),
        ({"clean": [1, 2], "corrupted": [1, 2], "answer": 99}, "outside the vocabulary"),
        ({"clean": "text", "corrupted": "text", "answer": 1}, "needs a tokenizer"),
        ({"clean": [1], "corrupted": [1], "answer": 1, "extra": 1}, "unknown field"),
    ],
)
def test_jsonl_errors_name_the_problem(tmp_path: Path, row: dict, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(TaskError, match=message):
        build_task(f"jsonl:path={path}", context=TaskContext(d_vocab=20))


def test_jsonl_text_with_a_tokenizer(
    tmp_path: Path, word_tokenizer: PreTrainedTokenizerFast
) -> None:
    path = tmp_path / "text.jsonl"
    row = {"clean": "When Mary and John went to the store , John gave a drink to",
           "corrupted": "When Alice and Bob went to the store , Tom gave a drink to",
           "answer": " Mary", "distractor": " John", "corruption": "abc names"}  # fmt: skip
    path.write_text(json.dumps(row) + "\n")
    context = TaskContext(d_vocab=len(word_tokenizer), tokenizer=word_tokenizer)
    task = build_task(f"jsonl:{path}", context=context)
    assert task.corruption == "abc names"
    assert word_tokenizer.decode(task.answers[0]) == "Mary"
    bad = dict(row, answer=" Mary John")
    path.write_text(json.dumps(bad) + "\n")
    with pytest.raises(TaskError, match="2 tokens"):
        build_task(f"jsonl:{path}", context=context)


@pytest.mark.parametrize("name", ["ioi", "greater_than", "docstring"])
def test_text_generators(name: str, word_tokenizer: PreTrainedTokenizerFast) -> None:
    context = TaskContext(d_vocab=len(word_tokenizer), tokenizer=word_tokenizer)
    task = build_task(f"{name}:n=6,seed=1", context=context)
    assert task.n_examples == 6 and task.clean.shape == task.corrupted.shape
    assert not torch.equal(task.clean, task.corrupted)
    assert task.distractors is not None and (task.answers != task.distractors).all()
    rows = torch.arange(6)
    assert (task.clean[rows, task.positions[:, 0]] != 0).all()  # reads the last real token
    with pytest.raises(TaskError, match="needs a tokenizer"):
        build_task(f"{name}:n=2", context=TaskContext(d_vocab=50))


def test_registry_specs_and_errors() -> None:
    assert parse_task_spec("induction:seq_len=4,n=2") == ("induction", {"seq_len": "4", "n": "2"})
    assert parse_task_spec("jsonl:/a/b.jsonl") == ("jsonl", {"": "/a/b.jsonl"})
    context = TaskContext(d_vocab=30)
    task = build_task("induction:seq_len=4,n=2,corrupt=second", context=context)
    assert task.spec["corrupt"] == "second" and task.n_examples == 2
    assert {"induction", "jsonl", "ioi", "greater_than", "docstring"} <= set(
        default_registry().names()
    )
    with pytest.raises(TaskError, match="no option"):
        build_task("induction:length=4", context=context)
    with pytest.raises(TaskError, match="unknown task"):
        build_task("nope", context=context)
    with pytest.raises(TaskError, match="integers"):
        build_task("induction:n=many", context=context)
    with pytest.raises(TaskError, match="corrupt"):
        build_task("induction:corrupt=middle", context=context)


def test_ioi_names_its_spans_by_role(word_tokenizer: PreTrainedTokenizerFast) -> None:
    """S1 and S2 hold the subject, IO the indirect object (the answer), END the read position;
    the templates differ in length, so S2 and END move between prompts and align by span."""
    context = TaskContext(d_vocab=len(word_tokenizer), tokenizer=word_tokenizer)
    task = build_task("ioi:n=12,seed=3", context=context)
    assert task.spans is not None and task.spans.names == ("S1", "IO", "S2", "END")
    index = task.spans.index
    for row in range(task.n_examples):
        at = {
            name: int((index[row] == k).nonzero()[0, 0]) for k, name in enumerate(task.spans.names)
        }
        tokens = task.clean[row]
        assert tokens[at["S1"]] == tokens[at["S2"]] == task.distractors[row, 0]  # type: ignore[index]
        assert tokens[at["IO"]] == task.answers[row, 0]
        assert at["END"] == int(task.positions[row, 0])
    ends = {int((index[r] == 3).nonzero()[0, 0]) for r in range(task.n_examples)}
    assert len(ends) > 1  # prompts of different lengths


def _first_token(task: TaskData, name: str, row: int) -> int:
    assert task.spans is not None
    number = task.spans.names.index(name)
    return int((task.spans.index[row] == number).nonzero()[0, 0])


def test_greater_than_names_the_start_year_and_the_read_position(
    word_tokenizer: PreTrainedTokenizerFast,
) -> None:
    context = TaskContext(d_vocab=len(word_tokenizer), tokenizer=word_tokenizer)
    task = build_task("greater_than:n=6,seed=2", context=context)
    assert task.spans is not None and task.spans.names == ("YY", "END")
    for row in range(task.n_examples):
        year = int(str(word_tokenizer.decode(task.answers[row]))) - 1
        # this word-level tokenizer keeps "17YY" whole: the span is the token holding YY
        held = str(word_tokenizer.decode(task.clean[row, _first_token(task, "YY", row)]))
        assert held.endswith(f"{year:02d}")
        assert _first_token(task, "END", row) == int(task.positions[row, 0])


def test_docstring_names_the_arguments_where_they_are_defined_and_documented(
    word_tokenizer: PreTrainedTokenizerFast,
) -> None:
    context = TaskContext(d_vocab=len(word_tokenizer), tokenizer=word_tokenizer)
    task = build_task("docstring:n=6,seed=4", context=context)
    assert task.spans is not None
    assert task.spans.names == ("A-def", "B-def", "C-def", "A-doc", "B-doc", "END")
    assert task.distractors is not None
    for row in range(task.n_examples):
        tokens = task.clean[row]
        at = {name: _first_token(task, name, row) for name in task.spans.names}
        assert tokens[at["C-def"]] == task.answers[row, 0]  # the argument to predict
        assert tokens[at["A-def"]] == tokens[at["A-doc"]] == task.distractors[row, 0]
        assert tokens[at["B-def"]] == tokens[at["B-doc"]]
        assert at["END"] == int(task.positions[row, 0])
        # the corruption renames the def line's arguments, at the same positions
        assert task.corrupted[row, at["A-def"]] != tokens[at["A-def"]]
        assert task.corrupted[row, at["A-doc"]] == tokens[at["A-doc"]]


class _NoOffsets:
    """A tokenizer that encodes and decodes but gives no character offsets (as slow ones)."""

    def __init__(self, inner: PreTrainedTokenizerFast) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def __call__(self, *args: object, **kwargs: object) -> object:
        raise NotImplementedError("return_offsets_mapping is not available")


def test_without_offsets_the_offset_tasks_name_no_spans(
    word_tokenizer: PreTrainedTokenizerFast,
) -> None:
    plain = TaskContext(d_vocab=len(word_tokenizer), tokenizer=word_tokenizer)
    context = TaskContext(d_vocab=len(word_tokenizer), tokenizer=_NoOffsets(word_tokenizer))
    for name in ("greater_than", "docstring"):
        task = build_task(f"{name}:n=4,seed=1", context=context)
        same = build_task(f"{name}:n=4,seed=1", context=plain)
        assert task.spans is None and same.spans is not None
        assert torch.equal(task.clean, same.clean) and torch.equal(task.corrupted, same.corrupted)
