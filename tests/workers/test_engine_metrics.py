"""Metrics on synthetic logits: values, shapes, and clear errors."""

from __future__ import annotations

import pytest
import torch

from circuitreg.workers.metrics import MetricError, metric_name, resolve_metric, within_rounding
from circuitreg.workers.tasks.base import TaskData, TaskError


def _task(distractors: bool = True) -> TaskData:
    tokens = torch.zeros(2, 3, dtype=torch.long)
    return TaskData(
        name="t", spec={}, clean=tokens, corrupted=tokens,
        positions=torch.tensor([[1, 2], [1, 2]]), answers=torch.tensor([[0, 1], [2, 0]]),
        distractors=torch.tensor([[1, 0], [0, 2]]) if distractors else None, corruption="x",
    )  # fmt: skip


def test_metric_values_on_known_logits() -> None:
    task = _task()
    logits = torch.zeros(5, 2, 2, 3)  # [S, N, P, V]
    logits[0, 0, 0, 0] = 2.0  # example 0, position 0: answer 0 beats distractor 1 by 2
    clean = torch.log_softmax(torch.zeros(2, 2, 3), dim=-1)
    diff = resolve_metric("logit_diff").per_example(logits, task, clean)
    assert diff.shape == (5, 2)
    assert diff[0].tolist() == pytest.approx([1.0, 0.0])  # mean over the two positions
    prob = resolve_metric("prob")(logits, task, clean)
    assert prob[1] == pytest.approx(1 / 3)
    kl = resolve_metric("kl")
    assert not kl.higher_is_better
    assert kl(logits, task, clean)[1] == pytest.approx(0.0, abs=1e-7)
    assert kl(logits, task, clean)[0] > 0


def test_metric_errors_and_names() -> None:
    with pytest.raises(MetricError, match="no distractor"):
        resolve_metric("logit_diff")(torch.zeros(1, 2, 2, 3), _task(False), torch.zeros(2, 2, 3))
    with pytest.raises(MetricError, match="unknown metric 'acc'"):
        resolve_metric("acc")

    def top(logits: torch.Tensor, task: TaskData, clean: torch.Tensor) -> torch.Tensor:
        return logits.amax(-1).mean(-1)

    assert resolve_metric(top).name == "top" and metric_name(top) == "callable:top"


def test_task_data_rejects_inconsistent_shapes() -> None:
    tokens = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(TaskError, match="outside"):
        TaskData(
            "t",
            {},
            tokens,
            tokens,
            torch.tensor([[3], [0]]),
            torch.zeros(2, 1, dtype=torch.long),
            None,
            "x",
        )
    with pytest.raises(TaskError, match="differ in shape"):
        TaskData(
            "t",
            {},
            tokens,
            tokens[:, :2],
            torch.zeros(2, 1, dtype=torch.long),
            torch.zeros(2, 1, dtype=torch.long),
            None,
            "x",
        )


def test_a_gap_within_float32_rounding_is_no_gap() -> None:
    # the KL between a run and its own exact re-computation measured on an AVX-512 CPU
    assert within_rounding(0.0, 1.9e-8)
    assert not within_rounding(0.0, 1e-4)
    # relative to the values' scale: rounding of a logit difference near 30 is ~1e-6
    assert within_rounding(30.0, 30.0 + 2e-6)
    assert not within_rounding(30.0, 30.001)
