"""The value types of the job queue: what callers submit (``JobSpec``) and read back.

These are plain pydantic models so that the API can serialise them directly and the worker
can validate what it pulls from the database; they never carry a database session.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

JobKind = Literal["discovery", "validation"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]

ACTIVE_STATUSES: tuple[JobStatus, ...] = ("queued", "running")
#: Jobs in these states absorb a duplicate submission; a failed or cancelled job does not,
#: so submitting it again starts a fresh job (the old row and its events stay for history).
DEDUPE_STATUSES: tuple[JobStatus, ...] = ("queued", "running", "succeeded")
FINAL_STATUSES: tuple[JobStatus, ...] = ("succeeded", "failed", "cancelled")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class JobSpec(_Frozen):
    """Everything a worker needs to run one job; the dedupe key is derived from it."""

    kind: JobKind
    model: str = Field(min_length=1, description="Model spec, e.g. a hub name or toy:NAME.")
    model_revision: str | None = Field(
        default=None, description="Weights hash or hub revision, when known."
    )
    task: str = Field(min_length=1, description="Task spec string, e.g. ioi or ioi:n=64.")
    method: str | None = Field(default=None, description="Discovery method name.")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Method parameters (the method config's options, e.g. steps, batch_size); two keys"
            " are the worker's own: selection = {mode: top_k|threshold|greedy|optimal, value,"
            " prune_dangling, time_limit (optimal only)} (default top_k 100) and seed (int)."
            " Validation jobs take the validation config's options (faithfulness_min,"
            " n_random, ...)."
        ),
    )
    ablation: str = Field(default="resample", min_length=1)
    metric: str = Field(default="logit_diff", min_length=1)
    circuit_id: str | None = Field(default=None, description="Circuit to validate.")
    priority: int = Field(default=0, description="Higher runs first; not part of the key.")

    @field_validator("params")
    @classmethod
    def _params_are_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(value, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"params must be plain JSON (no NaN, no objects): {exc}") from exc
        return value

    @model_validator(mode="after")
    def _kind_has_its_fields(self) -> JobSpec:
        if self.kind == "discovery" and not self.method:
            raise ValueError("a discovery job needs a method name")
        if self.kind == "validation" and not self.circuit_id:
            raise ValueError("a validation job needs the circuit_id to validate")
        return self

    def dedupe_key(self) -> str:
        """SHA-256 of what makes two submissions the same job (canonical JSON).

        The model is identified by its revision when known (two spellings of one set of
        weights are one job) and by its spec otherwise. Priority is not part of the key.
        """
        identity = {
            "kind": self.kind,
            "model": self.model_revision or self.model,
            "task": self.task,
            "method": self.method,
            "params": self.params,
            "ablation": self.ablation,
            "metric": self.metric,
            "circuit_id": self.circuit_id,
        }
        blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(blob.encode()).hexdigest()


class JobRecord(_Frozen):
    """One job as stored: its spec, state, lease and outcome."""

    id: str
    kind: JobKind
    spec: JobSpec
    status: JobStatus
    priority: int
    attempts: int = Field(description="Claims so far, including the running one.")
    max_attempts: int
    progress: float = Field(ge=0.0, le=1.0)
    message: str | None
    error: str | None = Field(description="Last error; kept when the job finally fails.")
    result: dict[str, Any] | None = Field(description='e.g. {"circuit_id": "c_..."}')
    dedupe_key: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    run_after: datetime = Field(description="Not claimable before this (retry backoff).")
    lease_owner: str | None
    lease_expires_at: datetime | None

    @property
    def is_final(self) -> bool:
        """True once the job will never run again."""
        return self.status in FINAL_STATUSES


class JobEvent(_Frozen):
    """One entry of a job's event log (enqueued, claimed, progress, retry, ...)."""

    id: int
    job_id: str
    at: datetime
    event: str
    worker_id: str | None
    message: str | None
    data: dict[str, Any] | None


class JobPage(_Frozen):
    """A page of jobs, newest first; pass ``end_cursor`` as ``after`` for the next page."""

    items: tuple[JobRecord, ...]
    has_next: bool
    end_cursor: str | None


class JobNotFoundError(KeyError):
    """No job has this id."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id

    def __str__(self) -> str:
        return f"no job with id {self.job_id!r}"
