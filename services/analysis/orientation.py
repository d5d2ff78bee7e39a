"""Which sign of a method's edge scores means "this edge carries the behaviour".

MIB's CPR ranks edges by signed score, highest first, assuming positive = helps; comparing
two methods' rankings needs the same. The methods here do not share one sign: EAP, EAP-IG,
path patching and (noising) activation patching report the *effect of ablating* the edge on
the metric, which is negative for an edge that helps a higher-is-better metric such as the
logit difference; ACDC reports the removal cost and mask pruning the mask logit, both
positive for an edge that helps. This table is the one place that knows which is which (a
method's ``direction=denoising`` measures restoring the edge, so positive helps again). It
is torch-free so that the API's consistency reports orient scores the same way validation
does. Unknown methods are taken at the ``ScoreResult`` contract's word: positive helps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from circuitreg.schema import CircuitDocument

ABLATION_EFFECT_METHODS = frozenset({"eap", "eap_ig", "activation_patching", "path_patching"})
"""Methods whose score is metric(edge ablated) - metric(clean) in their default direction."""

LOWER_IS_BETTER_METRICS = frozenset({"kl"})
"""Metrics where a smaller value means more of the clean behaviour (mirrors the workers'
``Metric.higher_is_better``; a worker test checks the two agree)."""


def helpful_sign(method: str, params: Mapping[str, Any], metric: str) -> tuple[float, str]:
    """+1 or -1 to multiply a method's scores by so that positive helps; and why."""
    if method not in ABLATION_EFFECT_METHODS or params.get("direction") == "denoising":
        return 1.0, f"{method}: positive score helps"
    if metric in LOWER_IS_BETTER_METRICS:
        return 1.0, f"{method}: score is the change of {metric} when ablated (lower is better)"
    return -1.0, f"{method}: score is the change of {metric} when ablated; negated"


def document_sign(doc: CircuitDocument) -> tuple[float, str]:
    """``helpful_sign`` for the method, parameters and metric a document records."""
    return helpful_sign(doc.method.name, doc.method.params, doc.metric)
