"""All configuration in one place, read from ``CIRCUITREG_*`` environment variables.

The defaults are embedded: SQLite for relational data and the embedded graph store, and a
directory of artifacts, all under ``data_dir``, so ``circuitreg demo`` needs no server.
A bad value stops start-up with one line that names the variable (see ``load_settings``).
"""

from __future__ import annotations

import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GraphBackend = Literal["embedded", "neo4j", "falkordb"]
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip


def parse_bytes(text: str) -> int:
    """``12GiB``, ``512MB``, ``1e9`` or a plain byte count as bytes; ``ValueError`` naming
    the text otherwise (pydantic-settings reads the variable as text)."""
    found = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    unit = found.group(2).lower() if found else ""
    if found is None or unit not in _UNITS:
        raise ValueError(f"not a memory size: {text!r} (use bytes or e.g. 512MiB, 12GiB, 8GB)")
    value = int(float(found.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"a memory size must be positive, got {text!r}")
    return value


class Settings(BaseSettings):
    """Every setting of the registry; the README's configuration table lists the same."""

    model_config = SettingsConfigDict(env_prefix="CIRCUITREG_", extra="ignore")

    data_dir: Path = Field(
        default=Path.home() / ".circuitreg",
        description="Where the embedded databases, artifacts and toy models live.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the relational database; default sqlite in data_dir.",
    )
    graph_backend: GraphBackend = Field(
        default="embedded", description="Circuit store: embedded (SQL), neo4j or falkordb."
    )
    graph_database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL for the embedded graph store; default: database_url.",
    )
    neo4j_uri: str | None = Field(default=None, description="bolt:// or neo4j:// URI.")
    neo4j_user: str = Field(default="neo4j", description="Neo4j user name.")
    neo4j_password: str = Field(default="", description="Neo4j password.")
    neo4j_database: str | None = Field(default=None, description="Neo4j database name.")
    falkordb_path: Path | None = Field(
        default=None, description="Directory of the embedded FalkorDB; default in data_dir."
    )
    artifact_url: str | None = Field(
        default=None,
        description="fsspec URL for dense score artifacts; default data_dir/artifacts.",
    )
    api_host: str = Field(default="127.0.0.1", description="Address `circuitreg serve` binds.")
    api_port: int = Field(default=8000, ge=1, le=65535, description="Port of the API.")
    anonymous_read: bool = Field(
        default=False, description="Allow reads without a token (public deployments)."
    )
    cors_origins: list[str] = Field(default_factory=list, description="Allowed CORS origins.")
    max_page_size: int = Field(default=100, ge=1, le=10_000, description="Largest page.")
    max_query_depth: int = Field(default=12, ge=2, le=50, description="GraphQL depth limit.")
    max_query_tokens: int = Field(default=2000, ge=50, description="GraphQL token limit.")
    max_aliases: int = Field(default=15, ge=1, description="GraphQL alias limit.")
    max_query_cost: int = Field(
        default=2000, ge=10, description="GraphQL fields a query may select, fragments expanded."
    )
    max_request_bytes: int = Field(
        default=1_048_576, ge=1024, description="Largest request body except circuit uploads."
    )
    max_upload_bytes: int = Field(
        default=64 * 1_048_576, ge=1024, description="Largest body of POST /circuits."
    )
    device: str = Field(default="auto", description="Torch device for workers: auto, cpu, cuda:N.")
    memory_budget: int | None = Field(
        default=None,
        description="Bytes a worker's engine may use beyond the model (e.g. 12GiB); unset: "
        "90% of free CUDA memory or 80% of available RAM.",
    )
    ray_address: str | None = Field(
        default=None, description="Ray cluster for sharded jobs; unset: a local Ray."
    )
    worker_lease_seconds: float = Field(default=30.0, gt=0, description="Job lease length.")
    worker_poll_seconds: float = Field(default=1.0, gt=0, description="Idle poll interval.")
    job_max_attempts: int = Field(default=3, ge=1, description="Attempts before a job fails.")
    job_retry_base_seconds: float = Field(
        default=5.0, ge=0, description="First retry delay of a failed job; doubles per attempt."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level."
    )

    @field_validator("database_url", "graph_database_url")
    @classmethod
    def _check_sqlalchemy_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(value)
        except ArgumentError as exc:
            raise ValueError(f"not a SQLAlchemy URL: {value!r}") from exc
        return value

    @field_validator("memory_budget", mode="before")
    @classmethod
    def _parse_memory_size(cls, value: object) -> object:
        return parse_bytes(value) if isinstance(value, str) else value

    @property
    def resolved_database_url(self) -> str:
        """The relational database URL, defaulting to SQLite inside ``data_dir``."""
        return self.database_url or f"sqlite:///{self.data_dir / 'registry.sqlite'}"

    @property
    def resolved_graph_database_url(self) -> str:
        """The embedded graph store's URL, defaulting to the relational database."""
        return self.graph_database_url or self.resolved_database_url

    @property
    def resolved_artifact_url(self) -> str:
        """Where dense score artifacts go, defaulting to a directory in ``data_dir``."""
        return self.artifact_url or str(self.data_dir / "artifacts")

    @property
    def resolved_falkordb_path(self) -> Path:
        """Directory of the embedded FalkorDB database."""
        return self.falkordb_path or self.data_dir / "falkordb"

    @property
    def toy_dir(self) -> Path:
        """Cache of the toy models the project trains itself."""
        return self.data_dir / "toy"


class SettingsError(SystemExit):
    """Raised when the environment holds a bad setting; its message is one line."""


def describe_error(exc: ValidationError) -> str:
    """One line naming each bad variable, e.g. ``CIRCUITREG_API_PORT: ...``."""
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "settings"
        parts.append(f"CIRCUITREG_{field.upper()}: {err['msg']}")
    return "bad setting: " + "; ".join(parts)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; a bad value raises ``SettingsError`` with one clear line."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(describe_error(exc)) from None


def load_settings_or_exit() -> Settings:
    """For entry points: print the one-line error to stderr and exit with status 2."""
    try:
        return get_settings()
    except SettingsError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(2) from None


def settings_table_markdown() -> str:
    """The README's configuration table, generated from the fields (a test keeps them equal)."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        if name == "data_dir":
            default: object = "~/.circuitreg"
        elif field.default_factory is not None:
            default = field.default_factory()  # type: ignore[call-arg]
        else:
            default = field.default
        shown = "(unset)" if default is None or default == "" else f"`{default}`"
        rows.append(f"| `CIRCUITREG_{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)
