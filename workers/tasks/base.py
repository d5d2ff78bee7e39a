"""What a discovery task hands to a method: prompt pairs, answers and where to read them.

A task is a set of clean prompts, one corrupted prompt per clean prompt (the resample
ablation patches from it), the token positions where the metric is read, and the answer (and
optionally distractor) token expected at each of those positions. The ``corruption`` string
says how the corrupted prompts were made: it decides which edges any method can see (an edge
whose source carries the same value in both runs is invisible), so it is recorded with every
run.

Prompts are right-padded to a common length; a causal model never lets padding on the right
influence earlier positions, so reading at ``positions`` is unaffected by it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from circuitreg.workers.positions import TokenSpans


class TaskError(ValueError):
    """A task spec, a data file or generated data that is not usable; the message says why."""


@dataclass(frozen=True)
class TaskData:
    """Clean/corrupted prompt pairs with answers, as long tensors on one device.

    Shapes: ``clean`` and ``corrupted`` ``[N, T]``; ``positions``, ``answers`` and
    ``distractors`` ``[N, P]`` (P read positions per prompt: 1 for IOI, half the sequence for
    induction). ``distractors`` is None when the task has no natural wrong answer (then the
    logit-difference metric is unavailable and says so).
    """

    name: str
    spec: dict[str, Any]
    clean: torch.Tensor
    corrupted: torch.Tensor
    positions: torch.Tensor
    answers: torch.Tensor
    distractors: torch.Tensor | None
    corruption: str
    default_metric: str = "logit_diff"
    # What building the task decided that its spec does not say (token length, whether a
    # BOS was added): printed by ``discover`` and recorded in the circuit's provenance.
    summary: dict[str, Any] = field(default_factory=dict)
    # Named spans of each prompt (IOI's S1, IO, S2, END), for positions that align prompts
    # by span (``workers/positions.py``); None where the task names none.
    spans: TokenSpans | None = None
    _hash: list[str] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for label, t in (("clean", self.clean), ("corrupted", self.corrupted)):
            if t.ndim != 2 or t.dtype != torch.long:
                raise TaskError(f"task {self.name!r}: {label} must be a long [N, T] tensor")
        if self.clean.shape != self.corrupted.shape:
            raise TaskError(
                f"task {self.name!r}: clean {tuple(self.clean.shape)} and corrupted "
                f"{tuple(self.corrupted.shape)} differ in shape"
            )
        n, seq = int(self.clean.shape[0]), int(self.clean.shape[1])
        if n == 0:
            raise TaskError(f"task {self.name!r} has no examples")
        for label, vec in (("positions", self.positions), ("answers", self.answers)):
            if vec.ndim != 2 or vec.shape[0] != n:
                raise TaskError(f"task {self.name!r}: {label} must be [N={n}, P]")
        if self.answers.shape != self.positions.shape:
            raise TaskError(f"task {self.name!r}: answers and positions differ in shape")
        if self.distractors is not None and self.distractors.shape != self.positions.shape:
            raise TaskError(f"task {self.name!r}: distractors and positions differ in shape")
        if int(self.positions.min()) < 0 or int(self.positions.max()) >= seq:
            raise TaskError(f"task {self.name!r}: read positions fall outside 0..{seq - 1}")
        if self.spans is not None:
            try:
                self.spans.check_shape(n, seq)
            except ValueError as exc:
                raise TaskError(f"task {self.name!r}: {exc}") from exc

    @property
    def n_examples(self) -> int:
        """Number of prompt pairs."""
        return int(self.clean.shape[0])

    @property
    def seq_len(self) -> int:
        """Padded prompt length."""
        return int(self.clean.shape[1])

    @property
    def device(self) -> torch.device:
        """Where the tensors live."""
        return self.clean.device

    def to(self, device: torch.device | str) -> TaskData:
        """The same task with every tensor on ``device``."""
        return TaskData(
            name=self.name,
            spec=dict(self.spec),
            clean=self.clean.to(device),
            corrupted=self.corrupted.to(device),
            positions=self.positions.to(device),
            answers=self.answers.to(device),
            distractors=None if self.distractors is None else self.distractors.to(device),
            corruption=self.corruption,
            default_metric=self.default_metric,
            summary=dict(self.summary),
            spans=None if self.spans is None else self.spans.to(device),
        )

    def subset(self, index: torch.Tensor | slice) -> TaskData:
        """A task made of some of the examples (same name, spec and corruption)."""
        return TaskData(
            name=self.name,
            spec=dict(self.spec),
            clean=self.clean[index],
            corrupted=self.corrupted[index],
            positions=self.positions[index],
            answers=self.answers[index],
            distractors=None if self.distractors is None else self.distractors[index],
            corruption=self.corruption,
            default_metric=self.default_metric,
            summary=dict(self.summary),
            spans=None if self.spans is None else self.spans.subset(index),
        )

    def batches(self, batch_size: int) -> list[TaskData]:
        """Consecutive subsets of at most ``batch_size`` examples."""
        if batch_size < 1:
            raise TaskError(f"batch_size must be >= 1, got {batch_size}")
        return [
            self.subset(slice(i, i + batch_size)) for i in range(0, self.n_examples, batch_size)
        ]

    @property
    def dataset_hash(self) -> str:
        """SHA-256 (first 16 hex digits) of the tensors and the corruption."""
        if not self._hash:
            h = hashlib.sha256()
            h.update(self.corruption.encode())
            for t in (self.clean, self.corrupted, self.positions, self.answers, self.distractors):
                if t is None:
                    h.update(b"none")
                    continue
                h.update(str(tuple(t.shape)).encode())
                h.update(t.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
            if self.spans is not None:  # only then, so tasks without spans keep their hash
                h.update(json.dumps(list(self.spans.names)).encode())
                h.update(self.spans.index.detach().cpu().contiguous().numpy().tobytes())
            self._hash.append(h.hexdigest()[:16])
        return self._hash[0]

    def describe(self) -> dict[str, Any]:
        """Name, spec, corruption and hash, JSON-safe (what provenance records)."""
        return {
            "name": self.name,
            "spec": json.loads(json.dumps(self.spec, default=str)),
            "corruption": self.corruption,
            "dataset_hash": self.dataset_hash,
            "n_examples": self.n_examples,
            "summary": json.loads(json.dumps(self.summary, default=str)),
            **({"spans": list(self.spans.names)} if self.spans is not None else {}),
        }


@dataclass(frozen=True)
class TaskContext:
    """What a task builder may know about the model: vocabulary, tokenizer, BOS token."""

    d_vocab: int
    tokenizer: Any | None = None
    bos_token_id: int | None = None

    @classmethod
    def from_model(cls, model: Any) -> TaskContext:
        """From a TransformerBridge (or anything with ``cfg.d_vocab`` and ``tokenizer``)."""
        tokenizer = getattr(model, "tokenizer", None)
        prepend = bool(getattr(model.cfg, "default_prepend_bos", False))
        bos = getattr(tokenizer, "bos_token_id", None) if tokenizer is not None else None
        return cls(
            d_vocab=int(model.cfg.d_vocab),
            tokenizer=tokenizer,
            bos_token_id=bos if prepend else None,
        )

    @classmethod
    def from_loaded(cls, loaded: Any) -> TaskContext:
        """From a ``LoadedModel``: the bridge, plus the BOS token its source records."""
        base = cls.from_model(loaded.bridge)
        bos = getattr(loaded, "info", {}).get("bos_token")
        if isinstance(bos, int):
            return cls(d_vocab=base.d_vocab, tokenizer=base.tokenizer, bos_token_id=bos)
        return base


# A task builder takes the parsed spec options and the model context.
TaskBuilder = Callable[[dict[str, str], TaskContext], TaskData]


@dataclass(frozen=True)
class TaskInfo:
    """A registered task: its name, builder, options with defaults, and what it needs."""

    name: str
    builder: TaskBuilder
    options: dict[str, str]
    description: str
    needs_tokenizer: bool = False
    positional: str | None = None  # option given without ``key=`` (jsonl: path)


def parse_task_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``name:key=value,key=value`` (or ``jsonl:PATH``) into name and options.

    A bare value after the colon (no ``=``) is returned under the key ``""``; the registry
    maps it to the task's positional option.
    """
    name, _, rest = spec.strip().partition(":")
    if not name:
        raise TaskError(f"task spec {spec!r} has no task name (expected name[:k=v,...])")
    options: dict[str, str] = {}
    if rest:
        if "=" not in rest:
            return name, {"": rest}
        for part in rest.split(","):
            key, eq, value = part.partition("=")
            if not eq or not key.strip():
                raise TaskError(f"task spec {spec!r}: {part!r} is not key=value")
            options[key.strip()] = value.strip()
    return name, options
