"""workers/tasks/prompt_spans.py: JSONL spans become task spans, shifted past an added BOS;
bad spans are refused naming the file's line and the span."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from circuitreg.workers.tasks.base import TaskContext, TaskError
from circuitreg.workers.tasks.jsonl_task import load_jsonl_task

CONTEXT = TaskContext(d_vocab=64, bos_token_id=0)


def _write(tmp_path: Path, rows: list[dict[str, object]]) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _row(clean: list[int], spans: object) -> dict[str, object]:
    return {"clean": clean, "corrupted": [t + 1 for t in clean], "answer": 3, "spans": spans}


def test_spans_shift_past_the_bos_and_align_by_name(tmp_path: Path) -> None:
    path = _write(tmp_path, [_row([5, 6, 7], {"S": [0, 1], "END": [2, 3]}),
                             _row([5, 6, 7, 8], {"S": [1, 3], "END": [3, 4]})])  # fmt: skip
    task = load_jsonl_task(path, CONTEXT)
    assert task.spans is not None and task.spans.names == ("S", "END")
    # BOS at 0, so the file's token 0 is index 1; the second prompt's S covers two tokens
    assert task.spans.index.tolist() == [[-1, 0, -1, 1, -1], [-1, -1, 0, 0, 1]]
    assert task.describe()["spans"] == ["S", "END"]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([_row([5, 6], {"S": [0, 1]}), _row([5, 6], {"T": [0, 1]})],
         r"pairs.jsonl:2: spans T differ from \S*pairs.jsonl:1's S"),
        ([_row([5, 6], {"S": [0, 1]}), _row([5, 6], {"S": [0, 3]})],
         r"pairs.jsonl:2 span 'S': \[0, 3\) is not a non-empty range"),
        ([_row([5, 6], {"S": [1, 1]})], "pairs.jsonl:1 span 'S': .* not a non-empty range"),
        ([_row([5, 6, 7], {"S": [0, 2], "T": [1, 3]})], "pairs.jsonl:1 span 'T' overlaps span 'S'"),
        ([_row([5, 6], {"S": [0]})], r"pairs.jsonl:1: span 'S' must be \[start, end\]"),
        ([_row([5, 6], [0, 1])], "spans must be an object"),
        ([_row([5, 6], {"other": [0, 1]})], "reserved"),
    ],
)  # fmt: skip
def test_bad_spans_name_what_is_wrong(
    tmp_path: Path, rows: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(TaskError, match=message):
        load_jsonl_task(_write(tmp_path, rows), CONTEXT)


def test_a_file_without_spans_has_none(tmp_path: Path) -> None:
    rows = [{"clean": [5, 6], "corrupted": [7, 8], "answer": 3}]
    assert load_jsonl_task(_write(tmp_path, rows), CONTEXT).spans is None
