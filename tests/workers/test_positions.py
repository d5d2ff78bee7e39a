"""workers/positions.py: spans that align prompts, and the map every positional run uses."""

from __future__ import annotations

import pytest
import torch

from circuitreg.workers.positions import OTHER_SPAN, PositionError, PositionMap, TokenSpans
from circuitreg.workers.tasks.base import TaskData, TaskError


def _task(spans: TokenSpans | None, n: int = 2, t: int = 5) -> TaskData:
    tokens = torch.arange(n * t).view(n, t) % 7
    read = torch.full((n, 1), t - 1)
    return TaskData("t", {}, tokens, tokens.flip(1), read, read, None, "flip", spans=spans)


def _spans() -> TokenSpans:
    # prompt 0: S at 1, END at 4; prompt 1: S at 2 (two tokens 2-3), END at 4
    index = torch.tensor([[-1, 0, -1, -1, 1], [-1, -1, 0, 0, 1]])
    return TokenSpans(("S", "END"), index)


def test_index_map_is_the_identity() -> None:
    task = _task(None)
    pm = PositionMap.for_task(task, "index")
    assert pm.labels == ("0", "1", "2", "3", "4") and pm.indices == (0, 1, 2, 3, 4)
    assert torch.equal(pm.assign(task), torch.arange(5).expand(2, 5))
    assert torch.equal(pm.one_hot(task).sum(-1), torch.ones(2, 5))


def test_span_map_aligns_by_span_and_keeps_the_rest_in_other() -> None:
    task = _task(_spans())
    pm = PositionMap.for_task(task, "spans")
    assert pm.labels == ("S", "END", OTHER_SPAN)
    assert pm.indices == (None, 4, None)  # S moves between prompts; END is at 4 in both
    assign = pm.assign(task)
    assert assign.tolist() == [[2, 0, 2, 2, 1], [2, 2, 0, 0, 1]]
    hot = pm.one_hot(task)
    assert hot.shape == (2, 5, 3) and torch.equal(hot.sum(-1), torch.ones(2, 5))
    # a batch of the task keeps its own prompts' spans
    assert pm.assign(task.subset(slice(1, 2))).tolist() == [[2, 2, 0, 0, 1]]


def test_spans_mode_needs_a_task_with_spans() -> None:
    with pytest.raises(PositionError, match="names no spans"):
        PositionMap.for_task(_task(None), "spans")
    with pytest.raises(PositionError, match="unknown position mode 'tokens'"):
        PositionMap.for_task(_task(None), "tokens")


@pytest.mark.parametrize(
    ("names", "index", "message"),
    [
        (("S", "S"), [[0, 1]], "repeat"),
        (("other",), [[0, 0]], "reserved"),
        (("3",), [[0, 0]], "reserved"),
        (("S",), [[0, 2]], "-1..0"),
        (("S", "END"), [[0, 1], [0, -1]], "span 'END' covers no token of prompt 1"),
    ],
)
def test_bad_spans_are_refused_with_the_reason(
    names: tuple[str, ...], index: list[list[int]], message: str
) -> None:
    with pytest.raises(PositionError, match=message):
        TokenSpans(names, torch.tensor(index))


def test_a_task_refuses_spans_of_another_shape() -> None:
    with pytest.raises(TaskError, match=r"spans are \(2, 4\) but the prompts are \(2, 5\)"):
        _task(TokenSpans(("S",), torch.zeros(2, 4, dtype=torch.long)))


def test_spans_travel_with_subsets_and_enter_the_hash() -> None:
    with_spans, without = _task(_spans()), _task(None)
    assert with_spans.subset(slice(0, 1)).spans is not None
    assert with_spans.dataset_hash != without.dataset_hash
    assert with_spans.describe()["spans"] == ["S", "END"]
    assert "spans" not in without.describe()
