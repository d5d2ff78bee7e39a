"""Shared pieces of the methods that run other methods (``ensemble``, ``bootstrap``).

A composite's config names its members by registry name and can set their options with one
string, ``"method.option=value,method.option=value"`` (``eap_ig.steps=10,acdc.tau=0.02``), so
it travels through the CLI's ``--param k=v`` and a job's JSON params like any other option.
Every member gets the composite's ablation, metric and batch size unless an override says
otherwise. Members' scores are oriented so that positive means the edge helps the behaviour
(``circuitreg.services.analysis.orientation``: EAP, EAP-IG and the patching methods report
the effect of ablating the edge, negative for a helpful edge under logit_diff), so the
composite's own scores are "positive helps", which is how validation reads any method it does
not know.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from circuitreg.workers.methods.base import ConfigError, MethodConfig, ProgressFn, ScoreResult
from circuitreg.workers.metrics import metric_name

SHARED_OPTIONS = ("ablation", "metric", "batch_size")
"""Options a composite hands to every member (an override may still change them)."""


def method_names(text: str, *, option: str) -> list[str]:
    """``"eap, eap_ig"`` -> ``["eap", "eap_ig"]`` (empty entries dropped)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ConfigError(f"{option} names no method")
    return names


def member_overrides(text: str, members: list[str]) -> dict[str, dict[str, str]]:
    """Parse ``"method.option=value,..."`` into ``{method: {option: value}}``."""
    out: dict[str, dict[str, str]] = {name: {} for name in members}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, eq, value = item.partition("=")
        method, dot, option = key.strip().partition(".")
        if not eq or not dot or not method or not option.strip():
            raise ConfigError(f"member option {item!r} is not method.option=value")
        if method not in out:
            raise ConfigError(
                f"member option {item!r} is for {method!r}, which is not one of "
                f"{', '.join(members)}"
            )
        out[method][option.strip()] = value.strip()
    return out


def member_config(
    name: str, composite: MethodConfig, overrides: Mapping[str, Any], *, refuse: tuple[str, ...]
) -> tuple[Any, MethodConfig]:
    """The registered method ``name`` and its config: the composite's shared options, then the
    overrides. ``refuse`` names methods that may not be members (the composite itself)."""
    from circuitreg.workers.methods.registry import RegistryError, default_registry

    if name in refuse:
        raise ConfigError(f"{name!r} cannot be a member of {composite.method_name!r}")
    try:
        info = default_registry().get(name)
    except RegistryError as exc:  # a KeyError: pydantic would not report it as a bad value
        raise ConfigError(str(exc)) from None
    shared = {option: getattr(composite, option) for option in SHARED_OPTIONS}
    try:
        return info, info.config({**shared, **overrides})
    except ConfigError as exc:
        raise ConfigError(f"member {name!r}: {exc}") from None


def oriented(result: ScoreResult, config: MethodConfig) -> tuple[torch.Tensor, float, str]:
    """The member's scores times the sign that makes positive mean "helps", the sign and why."""
    from circuitreg.services.analysis.orientation import helpful_sign  # 1 s of scipy: lazily

    sign, why = helpful_sign(result.method, result.params, metric_name(config.metric))
    return result.edge_scores.detach().double().cpu() * sign, sign, why


def scaled(progress: ProgressFn | None, start: float, stop: float) -> ProgressFn | None:
    """``progress`` for a part of the work, mapped onto ``start .. stop``."""
    if progress is None:
        return None
    report = progress

    def inner(fraction: float, message: str) -> None:
        report(start + (stop - start) * min(max(fraction, 0.0), 1.0), message)

    return inner


@dataclass(frozen=True)
class MemberRun:
    """What one member run cost and returned, as a composite records it in ``extra``."""

    method: str
    params: dict[str, Any]
    n_forward: int
    n_backward: int
    seconds: float

    @classmethod
    def of(cls, result: ScoreResult) -> MemberRun:
        return cls(result.method, result.params, result.n_forward, result.n_backward,
                   round(result.seconds, 4))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "params": self.params,
            "n_forward": self.n_forward,
            "n_backward": self.n_backward,
            "seconds": self.seconds,
        }
