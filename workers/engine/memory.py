"""How many examples (and intervention sets) a pass may hold: planned from a memory budget.

A run that outgrows its device either fails half-way (CUDA out of memory) or swaps (the CPU),
so the engine plans its example batch before the first forward: it estimates the bytes one
example costs in the kind of pass the method runs, divides the budget by it, and refuses a
run whose single example does not fit, with the estimate and the budget in the message.

The budget is ``CIRCUITREG_MEMORY_BUDGET`` (bytes, or a size such as ``12GiB``); unset, it is
what the device has free when the engine is built: 90% of CUDA's free memory, or 80% of the
memory the operating system reports available. It covers the engine's working memory, not
the model's weights (already loaded when the plan is made).

The estimates count the tensors that dominate each pass, in the engine's own layout (the
shapes are in ``gradients.py``, ``forward.py`` and ``stream.py``): they are sums of products
of the model's widths, written out below so that a reader can check them, and the bench
(``bench/scale.py``) prints each estimate beside the peak memory it measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import psutil
import torch

from circuitreg.settings import get_settings
from circuitreg.workers.engine.weights import EngineError, ModelWeights
from circuitreg.workers.graph import ComputationalGraph

Workload = Literal["attribution", "patching", "patching_grad"]
"""The pass a method runs: ``attribution`` (one unpatched forward and backward with a probe
per reader: EAP, RelP, EAP-IG's inputs), ``patching`` (patched forwards without gradients,
many sets per pass: ACDC, activation and path patching, validation), ``patching_grad``
(patched forwards with gradients: mask pruning, EAP-IG's activations)."""

CUDA_SHARE = 0.9
CPU_SHARE = 0.8


def budget_for(device: torch.device, configured: int | None = None) -> int:
    """The budget in bytes: ``configured`` (``CIRCUITREG_MEMORY_BUDGET``), else a share of
    what ``device`` has free now."""
    if configured is not None:
        return configured
    setting = get_settings().memory_budget
    if setting is not None:
        return setting
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * CUDA_SHARE)
    return int(psutil.virtual_memory().available * CPU_SHARE)


@dataclass(frozen=True)
class Widths:
    """The sizes the estimates multiply: tokens, model width, heads, writers, layers."""

    seq_len: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    n_writers: int
    n_layers: int
    itemsize: int

    @classmethod
    def of(cls, weights: ModelWeights, graph: ComputationalGraph, seq_len: int) -> Widths:
        """The widths of a model's weights and graph, for prompts of ``seq_len`` tokens."""
        layer = weights.layers[0]
        d_mlp = 0 if graph.attn_only else _mlp_width(layer.mlp)
        return cls(seq_len, int(weights.w_e.shape[1]), graph.n_heads, int(layer.w_q.shape[-1]),
                   d_mlp, len(graph.writers), graph.n_layers,
                   weights.w_e.element_size())  # fmt: skip


def _mlp_width(module: object) -> int:
    """The widest hidden size among an MLP's linear maps (its ``d_mlp``)."""
    sizes = [int(p.shape[0]) for p in getattr(module, "parameters", list)() if p.ndim == 2]
    sizes += [int(p.shape[1]) for p in getattr(module, "parameters", list)() if p.ndim == 2]
    return max(sizes, default=0)


@dataclass(frozen=True)
class PassCost:
    """Estimated bytes per example of one pass: what the engine keeps per example (the
    prepared batch), and what each intervention set adds while the pass runs."""

    kept: int
    per_set: int

    def per_example(self, sets: int = 1) -> int:
        """Bytes one example costs with ``sets`` intervention sets in the pass."""
        return self.kept + sets * self.per_set


def pass_cost(w: Widths, workload: Workload, positional: bool = False) -> PassCost:
    """The terms that dominate each pass, in the engine's layout (``positional``: the
    positional forward's, ``positional.py``, for patching workloads)."""
    t, d, h = w.seq_len, w.d_model, w.n_heads
    if positional and workload != "attribution":
        return _positional_cost(w, workload)
    kept = 3 * t * w.n_writers * d  # clean and ablated writer outputs, their difference
    # one layer of a forward: q/k/v inputs per head and their norms, q/k/v, scores and
    # pattern, z and the heads' outputs, the MLP's norm, hidden (pre- and post-activation)
    layer = _layer_terms(w)
    stream = t * w.n_writers * d  # the residual stream's per-set writer groups
    if workload == "attribution":  # the model's own forward saved for the backward (one
        # normed input per block, q/k/v and their probes, pattern, z, head outputs, MLP)...
        saved = t * (4 * d + 6 * h * w.d_head + 2 * h * t + h * w.d_head + h * d + 3 * w.d_mlp)
        probes = t * (3 * h * d + d)  # ... and every reader's gradient, twice: EAP-IG's
        per_set = w.n_layers * (saved + 2 * probes)  # running sum and the step's own
    elif workload == "patching":  # no gradients: one layer's work at a time
        per_set = stream + layer
    else:  # every layer's per-set tensors saved for the backward; the factor is measured:
        # mask pruning on GPT-2 small's shape peaked at 310 MB per example and sample, 2.4x
        # what 2 * n_layers * layer counts (bench/results/scale.md, 2026-12-05)
        per_set = stream + 5 * w.n_layers * layer
    return PassCost(w.itemsize * kept, w.itemsize * per_set)


def _layer_terms(w: Widths) -> int:
    """One layer of a forward per example and set (see ``pass_cost``)."""
    t, d, h = w.seq_len, w.d_model, w.n_heads
    return t * (6 * h * d + 4 * h * w.d_head + 2 * h * t + h * d + 2 * d + 3 * w.d_mlp)


def _positional_cost(w: Widths, workload: Workload) -> PassCost:
    """A positional pass (``positional.py``): every set keeps all its writers' outputs
    ``[T, W, d]`` per example, and a layer's readers form the writers' changes ``[T, k, d]``
    and their per-token coefficients ``[T, 3H, k]`` on top of the layer's own tensors.

    Measured on CPU with every allocation counted (``bench/positional_patching.py``): the
    estimate covers the measured peak per example and set (bench/results/
    positional_patching.md)."""
    t, d, h = w.seq_len, w.d_model, w.n_heads
    kept = 3 * t * w.n_writers * d
    stream, coeff = t * w.n_writers * d, t * 3 * h * w.n_writers
    # the readers' inputs come out token-major ``[T, R, d]`` and are copied receiver-major
    # for the heads, on top of the layer's own inputs and norms
    inputs = 2 * t * 3 * h * d
    if workload == "patching":  # one layer at a time: the buffer, one change, coefficients
        per_set = 2 * stream + coeff + inputs + _layer_terms(w)
    else:  # with gradients every layer's change and coefficients stay for the backward
        per_set = stream + w.n_layers * (stream + coeff + inputs) + 5 * w.n_layers * _layer_terms(w)
    return PassCost(w.itemsize * kept, w.itemsize * per_set)


@dataclass(frozen=True)
class MemoryPlan:
    """The examples per pass a budget allows, and what it was computed from."""

    batch_size: int
    cost: PassCost
    budget: int
    workload: Workload

    def sets_within(self, n_examples: int, at_most: int) -> int:
        """Intervention sets one pass over ``n_examples`` may stack (1 at least: the plan
        made sure one set fits)."""
        spare = self.budget // max(1, n_examples) - self.cost.kept
        return max(1, min(at_most, spare // max(1, self.cost.per_set)))

    def describe(self) -> str:
        """One line for logs and job records."""
        return (f"{self.workload}: {self.batch_size} examples per pass at about "
                f"{_size(self.cost.per_example())} each, budget {_size(self.budget)}")  # fmt: skip


def plan_batch(
    widths: Widths,
    workload: Workload,
    requested: int,
    budget: int,
    sets: int = 1,
    positional: bool = False,
) -> MemoryPlan:
    """At most ``requested`` examples per pass within ``budget`` bytes, each with ``sets``
    intervention sets alive at once; ``EngineError`` before any work where even one example
    does not fit. ``positional`` plans the positional forward's passes (``positional.py``).

    With gradients (``patching_grad``) every set of a step stays in the autograd graph until
    its backward, however many passes the forward takes, so the step's sets all count; without
    them a pass holds what ``MemoryPlan.sets_within`` allows, at least one.
    """
    cost = pass_cost(widths, workload, positional)
    alive = sets if workload == "patching_grad" else 1
    one = cost.per_example(alive)
    if one > budget:
        raise EngineError(
            f"this run needs about {_size(one)} for one example of {widths.seq_len} tokens "
            f"({workload} pass, {alive} set(s) alive at once) but the memory budget is "
            f"{_size(budget)}; set CIRCUITREG_MEMORY_BUDGET higher, use fewer sets (mask "
            "samples), shorten the prompts or use a device with more memory"
        )
    return MemoryPlan(min(requested, budget // one), cost, budget, workload)


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"
