"""auto-circuit prune scores: ``{dest module name: tensor of incoming edge scores}``.

auto-circuit (Miller et al.) keys ``PruneScores`` by the destination's hook in the
factorised graph and indexes each tensor by ``[seq?, head?, src_idx]``. Sources are numbered
in model order: ``Resid Start`` (our ``input``), then per layer the heads, then the MLP -
the same order as our canonical nodes - and a destination sees every source before it:

* ``blocks.{L}.hook_{q,k,v}_input``: ``[n_heads, n_prior]`` -> ``src->a{L}.h{H}<q|k|v>``
* ``blocks.{L}.hook_mlp_in``: ``[n_prior]`` -> ``src->m{L}``
* ``blocks.{n-1}.hook_resid_post``: ``[n_sources]`` -> ``src->logits``

A leading extra dimension is the token position. Files: JSON (nested lists), ``.npz``,
safetensors, or a ``torch.save`` dict (read without torch). Prune scores do not say which
edges form the circuit: by default every non-zero score is in it; ``top_k`` keeps the k
largest by magnitude (auto-circuit's own thresholding; ties at the cut are kept).
``hook_attn_in`` (heads without separate q/k/v inputs) has no canonical edge name and is
refused.
"""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np

from circuitreg.schema import CircuitDocument, Component, Edge, Receiver, edge_name

from .base import ImportOptions, build_document, sorted_component_names
from .containers import decode_for_reader
from .errors import InterchangeError, UnrepresentableError
from .positions import summed_view

# At most 9 digits of layer: int() refuses 4,300 and more, and layers are stored in 32 bits.
_KEY = re.compile(
    r"^blocks\.(\d{1,9})\.(hook_(q|k|v)_input|hook_mlp_in|hook_resid_post|hook_attn_in)$"
)


def source_names(n_layers: int, n_heads: int, attn_only: bool) -> list[str]:
    """auto-circuit's source order, in canonical names."""
    names = ["input"]
    for layer in range(n_layers):
        names += [f"a{layer}.h{h}" for h in range(n_heads)]
        if not attn_only:
            names.append(f"m{layer}")
    return names


def _prior(layer: int, kind: str, n_heads: int, attn_only: bool) -> int:
    """How many sources a destination in ``layer`` reads (those strictly before it).

    This is the sequential layout (MLP after attention); parallel attention/MLP models
    (GPT-J style) give other shapes and are refused by the shape check.
    """
    per_layer = n_heads + (0 if attn_only else 1)
    if kind == "head":
        return 1 + layer * per_layer
    if kind == "mlp":
        return 1 + layer * per_layer + n_heads
    return 1 + (layer + 1) * per_layer


def _arrays(payload: Any) -> dict[str, np.ndarray]:
    """The container's mapping as float64 arrays, refusing non-numbers and non-finite ones
    (a NaN score would make every ranking of edges meaningless)."""
    if not isinstance(payload, dict):
        raise InterchangeError("expected a mapping of module name -> scores", location="top")
    out = {}
    for key, value in payload.items():
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float
            raise InterchangeError("scores must be numbers", location=f"key {key!r}") from None
        if not np.all(np.isfinite(array)):
            raise InterchangeError("scores must be finite numbers", location=f"key {key!r}")
        out[str(key)] = array
    return out


_Destination = tuple[str, int, str, str | None]
"""A destination module: its key, layer, kind (head, mlp or logits) and q/k/v letter."""


def read_auto_circuit(data: bytes, options: ImportOptions) -> CircuitDocument:
    """Import prune scores; the model shape is read off the keys and tensor shapes."""
    container = decode_for_reader(
        data, ("json", "npz", "safetensors", "torch", "pickle"), "an auto-circuit prune-score file"
    )
    arrays = _arrays(container.payload)
    parsed = _destinations(arrays)
    n_layers, n_heads, attn_only = _model_shape(parsed, arrays, options)
    # Shapes first: the source list below is as long as the model is deep, and a key such as
    # blocks.99999999999.hook_resid_post must be refused by its shape, not by running out of
    # memory listing 10^11 sources.
    for key, layer, kind, _ in parsed:
        if layer >= n_layers:
            raise InterchangeError(
                f"layer {layer} is beyond the model's last layer ({n_layers - 1}, "
                f"{'from n_layers' if options.n_layers else 'where the logits are read'})",
                location=f"key {key!r}",
            )
        _check_shape(arrays[key], key, layer, kind, n_heads, attn_only)
    sources = source_names(n_layers, n_heads, attn_only)
    scored: list[tuple[str, int | None, float]] = []
    for key, layer, kind, letter in parsed:
        scored += _edges_of(arrays[key], key, layer, kind, letter, n_heads, attn_only, sources)
    chosen = _in_circuit([score for _, _, score in scored], options.top_k)
    edges = [
        Edge.from_name(name, score=score, in_circuit=i in chosen, position=pos)
        for i, (name, pos, score) in enumerate(scored)
    ]
    active = {n for e in edges if e.in_circuit for n in (e.source, e.target)}
    names = sorted_component_names(n for e in edges for n in (e.source, e.target))
    return build_document(
        options=options,
        format_name="auto-circuit",
        model_defaults={"n_layers": n_layers, "n_heads": n_heads, "attn_only": attn_only},
        components=[Component.from_name(n, in_circuit=n in active) for n in names],
        edges=edges,
    )


def _destinations(arrays: dict[str, np.ndarray]) -> list[_Destination]:
    """Each key as the destination it names; a key that is none, or one without separate
    q/k/v inputs (no canonical edge name), is refused."""
    parsed: list[_Destination] = []
    for key in arrays:
        match = _KEY.match(key)
        if not match:
            raise InterchangeError(
                "not an auto-circuit destination module", location=f"key {key!r}"
            )
        if match[2] == "hook_attn_in":
            raise UnrepresentableError(
                "heads without separate q/k/v inputs have no canonical edge names "
                "(run auto-circuit with separate_qkv=True)",
                location=f"key {key!r}",
            )
        kind = "head" if match[3] else ("mlp" if match[2] == "hook_mlp_in" else "logits")
        parsed.append((key, int(match[1]), kind, match[3]))
    if not parsed:
        raise InterchangeError("no destination modules: the mapping is empty", location="top")
    return parsed


def _model_shape(
    parsed: list[_Destination], arrays: dict[str, np.ndarray], options: ImportOptions
) -> tuple[int, int, bool]:
    """``(n_layers, n_heads, attn_only)``: the options' values, else read off the file.

    Heads are a head tensor's second-to-last axis; the depth is where the logits are read
    (the last layer's residual stream), else one past the deepest destination; a model
    with no MLP destination is attention-only.
    """
    heads = [
        arrays[k].shape[-2] for k, _, kind, _ in parsed if kind == "head" and arrays[k].ndim >= 2
    ]
    n_heads = options.n_heads or (heads[0] if heads else 1)
    logits = [layer for _, layer, kind, _ in parsed if kind == "logits"]
    n_layers = options.n_layers or (logits[0] + 1 if logits else max(p[1] for p in parsed) + 1)
    attn_only = not any(kind == "mlp" for _, _, kind, _ in parsed)
    return n_layers, n_heads, attn_only


def _in_circuit(scores: list[float], top_k: int | None) -> set[int]:
    """Indices of the scores in the circuit: prune scores do not say which edges form it.

    Every non-zero score by default; with ``top_k`` the k largest by magnitude, as
    auto-circuit thresholds them (ties at the cut are kept, zeros never are).
    """
    if top_k is None:
        return {i for i, s in enumerate(scores) if s != 0.0}
    magnitudes = sorted((abs(s) for s in scores), reverse=True)
    cutoff = magnitudes[top_k - 1] if 0 < top_k <= len(magnitudes) else 0.0
    return {i for i, s in enumerate(scores) if abs(s) >= cutoff and s != 0.0}


def _check_shape(
    array: np.ndarray, key: str, layer: int, kind: str, n_heads: int, attn_only: bool
) -> tuple[int, ...]:
    """The shape a destination's scores must have (without the position axis), or an error."""
    prior = _prior(layer, kind, n_heads, attn_only)
    expected = (n_heads, prior) if kind == "head" else (prior,)
    if array.shape[-len(expected) :] != expected or array.ndim not in (
        len(expected),
        len(expected) + 1,
    ):
        raise InterchangeError(
            f"expected shape [seq?, {', '.join(map(str, expected))}] for a model with "
            f"{n_heads} heads{' (attention only)' if attn_only else ''}, got {list(array.shape)}",
            location=f"key {key!r}",
        )
    return expected


def _edges_of(
    array: np.ndarray,
    key: str,
    layer: int,
    kind: str,
    letter: str | None,
    n_heads: int,
    attn_only: bool,
    sources: list[str],
) -> list[tuple[str, int | None, float]]:
    """``(edge name, position, score)`` for every entry of one destination's tensor."""
    prior = _prior(layer, kind, n_heads, attn_only)
    expected = _check_shape(array, key, layer, kind, n_heads, attn_only)
    positioned = array.ndim == len(expected) + 1
    per_position = array if positioned else array[None, ...]
    out = []
    for pos, block in enumerate(per_position):
        position = pos if positioned else None
        if kind == "head":
            for head in range(n_heads):
                target = f"a{layer}.h{head}"
                for src in range(prior):
                    name = edge_name(sources[src], target, Receiver(letter or ""))
                    out.append((name, position, float(block[head, src])))
        else:
            target = f"m{layer}" if kind == "mlp" else "logits"
            out += [
                (edge_name(sources[s], target), position, float(block[s])) for s in range(prior)
            ]
    return out


MAX_EXPORTED_SCORES = 100_000_000  # 800 MB of float64; a 70B model's graph is ~40 million


def _dense_size(n_layers: int, n_heads: int, attn_only: bool) -> int:
    """How many scores the exported arrays hold (it grows with the square of the depth)."""
    per_layer = n_heads + (0 if attn_only else 1)
    before = per_layer * n_layers * (n_layers - 1) // 2  # sources of earlier layers, summed
    heads = 3 * n_heads * (n_layers + before)
    mlps = 0 if attn_only else n_layers * (1 + n_heads) + before
    return heads + mlps + 1 + n_layers * per_layer


def write_auto_circuit(doc: CircuitDocument) -> bytes:
    """Prune scores as ``.npz`` (float64); edges absent from the document score 0."""
    model = doc.model
    if model.parallel_attn_mlp:
        raise UnrepresentableError(
            "parallel attention/MLP layouts are not exported", location="model"
        )
    dense = _dense_size(model.n_layers, model.n_heads, model.attn_only)
    if dense > MAX_EXPORTED_SCORES:
        raise UnrepresentableError(
            f"prune scores of a model with {model.n_layers} layers and {model.n_heads} heads "
            f"would hold {dense} numbers; at most {MAX_EXPORTED_SCORES} are exported",
            location="model",
        )
    sources = source_names(model.n_layers, model.n_heads, model.attn_only)
    index = {name: i for i, name in enumerate(sources)}
    arrays: dict[str, np.ndarray] = {}
    for layer in range(model.n_layers):
        prior_head = _prior(layer, "head", model.n_heads, model.attn_only)
        for letter in "qkv":
            arrays[f"blocks.{layer}.hook_{letter}_input"] = np.zeros((model.n_heads, prior_head))
        if not model.attn_only:
            prior_mlp = _prior(layer, "mlp", model.n_heads, False)
            arrays[f"blocks.{layer}.hook_mlp_in"] = np.zeros(prior_mlp)
    last = f"blocks.{model.n_layers - 1}.hook_resid_post"
    arrays[last] = np.zeros(len(sources))
    for edge in summed_view(doc).edges:  # exported summed over positions (see positions.py)
        where = f"edge {edge.name!r}"
        if edge.source not in index:
            raise UnrepresentableError("only head/MLP edges are exported", location=where)
        target = Component.from_name(edge.target)
        at: tuple[int, ...]
        if target.name == "logits":
            key, at = last, (index[edge.source],)
        elif edge.receiver is not None:
            key = f"blocks.{target.layer}.hook_{edge.receiver.value}_input"
            at = (target.head or 0, index[edge.source])
        else:
            key, at = f"blocks.{target.layer}.hook_mlp_in", (index[edge.source],)
        if key not in arrays or at[-1] >= arrays[key].shape[-1]:
            raise UnrepresentableError("the edge is outside the model's graph", location=where)
        arrays[key][at] = 0.0 if edge.score is None else edge.score
    out = io.BytesIO()
    np.savez(out, **arrays)  # type: ignore[arg-type]
    return out.getvalue()


def sniff_auto_circuit(data: bytes, payload: Any) -> bool:
    """A mapping whose keys are auto-circuit destination modules."""
    return (
        isinstance(payload, dict)
        and bool(payload)
        and all(isinstance(k, str) and _KEY.match(k) for k in payload)
    )
