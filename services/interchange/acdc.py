"""ACDC edge dictionaries: ``(receiver_hook, receiver_index, sender_hook, sender_index)``.

ACDC (Conmy et al.) names an edge by the hook that receives it and the hook that sends it,
each with a ``TorchIndex`` picking the head (``[:, :, 3]``) or the whole tensor (``[:]``).
Accepted shapes, from JSON, a pickle or a ``torch.save`` file (all loaded safely):

* a dict keyed by the 4-tuple, or by ``((receiver_hook, index), (sender_hook, index))``;
* a list of ``(key, value)`` pairs (ACDC's ``save_edges``), or of JSON objects
  ``{"receiver": [hook, index], "sender": [hook, index], "present": ..., "effect_size": ...}``;
* a JSON object whose keys are the printed tuple, e.g.
  ``"('blocks.1.hook_q_input', [:, :, 0], 'blocks.0.attn.hook_result', [:, :, 3])"``.

Values: a bool (present), a number (effect size; the edge is present), ACDC's ``Edge``, or
``{"present", "effect_size"}``. Indices: ``TorchIndex``, a tuple/list with None for ``:``, or
the printed form. Edges inside one component (``hook_q_input -> hook_q`` and ACDC's
placeholder edges) have no circuitreg counterpart and are skipped; provenance counts them.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from circuitreg.schema import CircuitDocument, Component, ComponentKind, Edge, Receiver

from .base import ImportOptions, build_document, error_text, sorted_component_names
from .containers import decode_for_reader, json_text
from .errors import InterchangeError, UnrepresentableError
from .jsonread import dumps
from .positions import summed_view
from .safeload import AcdcEdgeRecord, EdgeTypeRecord, TorchIndexRecord
from .shapes import infer_shape, inferred_note

_SENDERS = (
    (re.compile(r"^blocks\.0\.hook_resid_pre$"), "input"),
    (re.compile(r"^hook_embed$"), "input"),
    (re.compile(r"^blocks\.(\d+)\.attn\.hook_result$"), "head"),
    (re.compile(r"^blocks\.(\d+)\.hook_mlp_out$"), "mlp"),
)
_RECEIVERS = (
    # at most 9 digits: int() refuses 4,300 and more, and layers are stored in 32 bits
    (re.compile(r"^blocks\.(\d{1,9})\.hook_([qkv])_input$"), "head"),
    (re.compile(r"^blocks\.(\d{1,9})\.hook_mlp_in$"), "mlp"),
    (re.compile(r"^blocks\.(\d{1,9})\.hook_resid_post$"), "logits"),
)
_INTERNAL = re.compile(r"^blocks\.\d+\.(attn\.hook_[qkv]|attn\.hook_result|hook_mlp_out)$")
_PRINTED_KEY = re.compile(r"'([^']+)'\s*,\s*(\[[^\]]*\])")
_PLACEHOLDER = 2


def _head(index: Any, where: str) -> int | None:
    """The head an index selects (``[:, :, 3]`` -> 3), or None for the whole tensor."""
    if isinstance(index, TorchIndexRecord):
        index = index.state.get("hashable_tuple", index.args[0] if index.args else None)
    if isinstance(index, str):
        items = [p.strip() for p in index.strip().strip("[]()").split(",") if p.strip()]
        index = [None if p in (":", "None", "null", "COL") else p for p in items]
    if not isinstance(index, tuple | list):
        raise InterchangeError(f"not a tensor index: {json_text(index)}", location=where)
    last = index[-1] if index else None
    if isinstance(last, slice) or last is None:
        return None
    try:
        return int(last)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite float
        raise InterchangeError(f"not a tensor index: {json_text(index)}", location=where) from None


def _sender(hook: str, head: int | None, where: str) -> str:
    for pattern, kind in _SENDERS:
        if match := pattern.match(hook):
            if kind == "input":
                return "input"
            if kind == "mlp":
                return f"m{match[1]}"
            if head is None:
                raise InterchangeError(f"{hook} needs a head index", location=where)
            return f"a{match[1]}.h{head}"
    raise InterchangeError(f"unknown sender hook {hook!r}", location=where)


def _receiver(
    hook: str, head: int | None, where: str, n_layers: int | None
) -> tuple[str, Receiver | None]:
    for pattern, kind in _RECEIVERS:
        if match := pattern.match(hook):
            layer = int(match[1])
            if kind == "mlp":
                return f"m{layer}", None
            if kind == "logits":
                if n_layers is not None and layer != n_layers - 1:
                    raise InterchangeError(
                        f"{hook} is not the last layer's residual (n_layers={n_layers})",
                        location=where,
                    )
                return "logits", None
            if head is None:
                raise InterchangeError(f"{hook} needs a head index", location=where)
            return f"a{layer}.h{head}", Receiver(match[2])
    raise InterchangeError(f"unknown receiver hook {hook!r}", location=where)


def _value(value: Any, where: str) -> tuple[bool, float | None, bool]:
    """(present, score, placeholder)."""
    if isinstance(value, AcdcEdgeRecord):
        kind = value.state.get("edge_type")
        placeholder = isinstance(kind, EdgeTypeRecord) and kind.args[:1] == (_PLACEHOLDER,)
        score = value.state.get("effect_size")
        return bool(value.state.get("present", True)), _number(score, where), placeholder
    if isinstance(value, dict):
        present = value.get("present", True)
        if not isinstance(present, bool):
            raise InterchangeError(
                f"present must be a boolean: {json_text(present)}", location=where
            )
        return present, _number(value.get("effect_size"), where), False
    if isinstance(value, bool | np.bool_):
        return bool(value), None, False
    return True, _number(value, where), False


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise InterchangeError(f"expected a number, got {json_text(value)}", location=where)
    try:
        return float(value)
    except OverflowError:  # an integer beyond a float's range
        raise InterchangeError("expected a finite number", location=where) from None


def _entries(payload: Any) -> list[tuple[tuple[Any, Any, Any, Any], Any, str]]:
    """Normalise every accepted shape to ((r_hook, r_idx, s_hook, s_idx), value, where)."""
    if isinstance(payload, dict):
        items = list(payload.items())
        wheres = [f"key {json_text(k) if not isinstance(k, str) else k!r}" for k, _ in items]
    elif isinstance(payload, list):
        items, wheres = [], []
        for i, item in enumerate(payload):
            where = f"item [{i}]"
            receiver = item.get("receiver") if isinstance(item, dict) else None
            sender = item.get("sender") if isinstance(item, dict) else None
            if isinstance(receiver, list) and isinstance(sender, list):
                items.append(((tuple(receiver), tuple(sender)), item))
            elif isinstance(item, list | tuple) and len(item) == 2:
                items.append((item[0], item[1]))
            elif isinstance(item, list | tuple) and len(item) in (3, 5):
                items.append((tuple(item[:-1]), item[-1]))
            else:
                raise InterchangeError(f"not an ACDC edge entry: {json_text(item)}", location=where)
            wheres.append(where)
    else:
        raise InterchangeError(
            f"expected a dict or list of ACDC edges, got {type(payload).__name__}", location="top"
        )
    out = []
    for (key, value), where in zip(items, wheres, strict=True):
        if isinstance(key, str):
            found = _PRINTED_KEY.findall(key)
            if len(found) != 2:
                raise InterchangeError("not a printed (receiver, sender) edge key", location=where)
            key = (found[0][0], found[0][1], found[1][0], found[1][1])
        elif (
            isinstance(key, list | tuple)
            and len(key) == 2
            and all(isinstance(end, list | tuple) and len(end) == 2 for end in key)
        ):
            key = (*key[0], *key[1])
        if not (isinstance(key, list | tuple) and len(key) == 4 and isinstance(key[0], str)):
            raise InterchangeError(f"not an ACDC edge key: {json_text(key)}", location=where)
        out.append(((key[0], key[1], key[2], key[3]), value, where))
    return out


def read_acdc(data: bytes, options: ImportOptions) -> CircuitDocument:
    """Import ACDC edges; see the module docstring for accepted shapes."""
    payload = decode_for_reader(data, ("json", "pickle", "torch"), "an ACDC edge file").payload
    edges: dict[str, Edge] = {}
    skipped = 0
    for (r_hook, r_idx, s_hook, s_idx), value, where in _entries(payload):
        present, score, placeholder = _value(value, where)
        if placeholder or _INTERNAL.match(r_hook):
            skipped += 1
            continue
        target, receiver = _receiver(r_hook, _head(r_idx, where), where, options.n_layers)
        source = _sender(s_hook, _head(s_idx, where), where)
        try:
            edge = Edge(source=source, target=target, receiver=receiver, score=score,
                        in_circuit=present)  # fmt: skip
        except ValueError as exc:
            raise InterchangeError(error_text(exc), location=where) from None
        if edge.name in edges:
            raise InterchangeError(f"edge {edge.name} appears twice", location=where)
        edges[edge.name] = edge
    active = {n for e in edges.values() if e.in_circuit for n in (e.source, e.target)}
    names = sorted_component_names(n for e in edges.values() for n in (e.source, e.target))
    comps = [Component.from_name(n, in_circuit=n in active) for n in names]
    return build_document(
        options=options,
        format_name="acdc",
        model_defaults=infer_shape(comps, options, location="edges"),
        components=comps,
        edges=edges.values(),
        default_method="acdc",
        extra={**inferred_note(options), "acdc_skipped_internal_edges": skipped},
    )


def _hook_of(name: str, receiver: Receiver | None, n_layers: int, sender: bool) -> list[Any]:
    comp = Component.from_name(name)
    whole: list[Any] = [None]
    if comp.kind is ComponentKind.EMBED:
        return ["blocks.0.hook_resid_pre", whole]
    if comp.kind is ComponentKind.LOGITS:
        return [f"blocks.{n_layers - 1}.hook_resid_post", whole]
    if comp.kind is ComponentKind.MLP:
        return [f"blocks.{comp.layer}.hook_mlp_{'out' if sender else 'in'}", whole]
    if comp.kind is ComponentKind.ATTN_HEAD:
        hook = "attn.hook_result" if sender else f"hook_{receiver}_input"
        return [f"blocks.{comp.layer}.{hook}", [None, None, comp.head]]
    raise UnrepresentableError("ACDC graphs have no feature nodes", location=f"component {name!r}")


def write_acdc(doc: CircuitDocument) -> bytes:
    """A JSON list of ``{"receiver", "sender", "present", "effect_size"}`` entries, summed
    over positions (ACDC's edge dictionary has none; ``positions.summed_view``)."""
    out = []
    for edge in summed_view(doc).edges:
        out.append(
            {
                "receiver": _hook_of(edge.target, edge.receiver, doc.model.n_layers, False),
                "sender": _hook_of(edge.source, None, doc.model.n_layers, True),
                "present": edge.in_circuit,
                "effect_size": edge.score,
            }
        )
    return dumps(out)


def sniff_acdc(data: bytes, payload: Any) -> bool:
    """Edge keys or entries that name ACDC hooks (``hook_*_input``, ``hook_resid_post``...)."""
    try:
        sample = _entries(payload)[:3]
    except (InterchangeError, TypeError, ValueError, KeyError, IndexError):
        return False
    return bool(sample) and all(
        isinstance(k[0], str) and k[0].startswith("blocks.") and isinstance(k[2], str)
        for k, _, _ in sample
    )
