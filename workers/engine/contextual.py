"""Contextual decomposition for transformers (CD-T; Hsu, Zhou et al. 2024, arXiv 2407.00886).

Every activation ``x`` is carried as a pair ``(beta, gamma)`` with ``beta + gamma = x``: the
*relevant* part, which comes from a chosen source, and the *irrelevant* rest. Each operation
maps the pair to the pair of its output by a rule that keeps the sum equal to the true
output (the tests check this to 1e-5 at every writer and at the logits). The rules, as the
paper and its code (github.com/adelaidehsu/CD_Circuit) define them:

- Linear maps (``W_V``, ``W_O``, ``W_in``, ``W_out``, ``W_U``) split exactly: ``W beta`` and
  ``W gamma``. The bias goes to gamma (``bias="irrelevant"``) or, as in the paper, is split in
  proportion to ``|W beta|`` and ``|W gamma|`` (``"proportional"``). The attention output bias
  ``b_O`` belongs to no node of this graph (as in EAP-IG), so it always goes to gamma.
- LayerNorm / RMSNorm: the scale ``sqrt(var + eps)`` is the *full* activation's, so the norm
  is linear in each part (centred, times the weight); its bias is split like a linear map's.
- Activations (GELU, ReLU, ...), at the full pre-activation ``h``: ``"shapley"`` gives beta the
  two-player Shapley value of CD's linearisation (Murdoch et al. 2018, Singh et al. 2019),
  ``((act(h) - act(gamma)) + (act(beta) - act(0))) / 2``; ``"irrelevant_first"`` gives gamma
  ``act(gamma)`` and beta the rest, ``act(h) - act(gamma)`` (the rule of CD-T's released
  ``prop_act``).
- Attention (``attention="values"``, CD-T's rule for the softmax): the pattern is computed from
  the full activation and held fixed; the values are decomposed, so each head is linear in
  its value input, and **a part entering a head's query or key moves nothing** (edges into
  q/k score 0, as under LRP's AH-rule). ``"pattern"`` applies the irrelevant-first rule to the
  whole head instead: gamma is the head's output on its inputs' gamma parts (q, k and v), so
  the pattern moves too.

Sources are batched: each of ``S`` decomposition sets has one source writer ``w``, whose output
is split into ``delta = clean_w - ablated_w`` (relevant) and ``ablated_w`` (irrelevant: the
ablation the config names is CD-T's baseline; the paper's ``set_irrel_to_mean`` is the mean
ablation, its default the zero one). Every other writer's pair follows from the rules, with
the patterns, norm scales and pre-activations of the *clean* run (``beta + gamma`` is the
clean activation everywhere). The source reaches each reader ``r`` it writes to as
``coeff[s, r] * delta``: those coefficients are what the edge split of ``cd_t`` differentiates.

Exactness: with ``bias="irrelevant"`` on a model whose only nonlinearity is input-independent
attention, the relevant logits are linear in the coefficients and equal the exact patching
effect of each edge; with irrelevant-first activations, the pattern rule and no norms, gamma is
at every node exactly the output of the run in which the source is ablated (so a source's
score is exact node patching). LayerNorm's frozen scale is where CD-T departs from patching.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import torch
from torch import nn

from circuitreg.workers.engine.blocks import at_positions, attention, head_outputs, project
from circuitreg.workers.engine.weights import EngineError, LayerWeights, ModelWeights
from circuitreg.workers.graph import ComputationalGraph

Part = tuple[torch.Tensor, torch.Tensor]  # (relevant beta, irrelevant gamma)
Activation = Callable[[torch.Tensor], torch.Tensor]
ActivationRule = Literal["shapley", "irrelevant_first"]
AttentionRule = Literal["values", "pattern"]
BiasRule = Literal["proportional", "irrelevant"]

CHECK_TOLERANCE = 1e-4  # our norm / MLP formula vs the module's own output (relative)


@dataclass(frozen=True)
class CDRules:
    """How each nonlinear operation splits its output (module docstring)."""

    activation: ActivationRule = "shapley"
    attention: AttentionRule = "values"
    bias: BiasRule = "proportional"


@dataclass(frozen=True)
class MLPWeights:
    """One dense MLP, ``W_out act(u W_in + b_in) + b_out``, read from the bridge."""

    w_in: torch.Tensor  # [d_model, d_mlp]
    b_in: torch.Tensor  # [d_mlp]
    w_out: torch.Tensor  # [d_mlp, d_model]
    b_out: torch.Tensor  # [d_model]
    act: Activation


@dataclass(frozen=True)
class CDModel:
    """What the decomposition reads: the engine's weights and each layer's MLP opened up."""

    weights: ModelWeights
    mlps: tuple[MLPWeights | None, ...]


def read_cd_model(model: Any, weights: ModelWeights) -> CDModel:
    """The engine's ``weights`` and the bridge's stacked ``W_in/b_in/W_out/b_out`` with each
    MLP module's own activation (``act`` or ``act_fn``); the formula is checked against the
    module on the first batch (``check_mlp``)."""
    mlps: list[MLPWeights | None] = []
    for index, layer in enumerate(weights.layers):
        if layer.mlp is None:
            mlps.append(None)
            continue
        act = getattr(layer.mlp, "act", None) or getattr(layer.mlp, "act_fn", None)
        if not callable(act):
            raise EngineError(f"CD-T cannot find the activation of blocks.{index}.mlp")
        with torch.no_grad():
            w_in, b_in, w_out, b_out = (
                getattr(model, name)[index].detach() for name in ("W_in", "b_in", "W_out", "b_out")
            )
        mlps.append(MLPWeights(w_in, b_in, w_out, b_out, act))
    return CDModel(weights, tuple(mlps))


def _check(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    """Refuse a module whose computation the rules here would get wrong."""
    ours, theirs = ours.detach(), theirs.detach()
    scale = max(1.0, float(theirs.abs().max()))
    if not float((ours - theirs).abs().max()) <= CHECK_TOLERANCE * scale:
        raise EngineError(f"CD-T cannot decompose {what}: its output is not the formula CD-T uses")


# -- the rules ---------------------------------------------------------------------------


def split_bias(part: Part, bias: torch.Tensor, rule: BiasRule) -> Part:
    """Add ``bias`` to a pair: all to gamma, or in proportion to ``|beta|`` and ``|gamma|``
    (gamma takes the remainder, so the sum is exact even where both are 0)."""
    beta, gamma = part
    if rule == "irrelevant":
        return beta, gamma + bias
    weight = beta.abs()
    share = bias * weight / (weight + gamma.abs() + 1e-12)
    return beta + share, gamma + (bias - share)


def linear_part(
    part: Part, weight: torch.Tensor, bias: torch.Tensor | None, rule: BiasRule
) -> Part:
    """``x W + b`` on each part (the bias by ``split_bias``)."""
    beta, gamma = part[0] @ weight, part[1] @ weight
    return (beta, gamma) if bias is None else split_bias((beta, gamma), bias, rule)


def norm_part(module: Any, x: torch.Tensor, part: Part, rule: BiasRule) -> Part:
    """A LayerNorm / RMSNorm with the scale of the full activation ``x`` (so linear in each
    part), or an identity. The formula is checked against ``module(x)``."""
    if isinstance(module, nn.Identity):
        return part
    if isinstance(module, nn.LayerNorm):
        centred = x - x.mean(-1, keepdim=True)
        scale = (centred.pow(2).mean(-1, keepdim=True) + module.eps).sqrt()

        def apply(p: torch.Tensor) -> torch.Tensor:
            return (p - p.mean(-1, keepdim=True)) / scale
    elif isinstance(module, nn.RMSNorm):
        eps = torch.finfo(x.dtype).eps if module.eps is None else module.eps
        scale = (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()

        def apply(p: torch.Tensor) -> torch.Tensor:
            return p / scale
    else:
        raise EngineError(f"CD-T has no rule for the norm {type(module).__name__}")
    weight, bias = module.weight, getattr(module, "bias", None)
    out = [apply(p) if weight is None else apply(p) * weight for p in part]
    full = apply(x) if weight is None else apply(x) * weight
    _check(full if bias is None else full + bias, module(x), type(module).__name__)
    return (out[0], out[1]) if bias is None else split_bias((out[0], out[1]), bias, rule)


def activation_part(act: Activation, h: torch.Tensor, part: Part, rule: ActivationRule) -> Part:
    """An elementwise activation at the full pre-activation ``h`` (module docstring); gamma is
    the remainder, so ``beta + gamma = act(h)`` exactly."""
    beta, gamma = part
    full = act(h)
    rest = full - act(gamma)  # what adding beta to gamma adds
    if rule == "irrelevant_first":
        return rest, full - rest
    alone = act(beta) - act(torch.zeros_like(beta))  # what beta adds to nothing
    relevant = (rest + alone) / 2
    return relevant, full - relevant


# -- the decomposed forward ----------------------------------------------------------------


@dataclass(frozen=True)
class Sources:
    """``S`` decomposition sets, one source writer each, on one batch of examples."""

    writers: list[int]  # [S] writer indices
    out: torch.Tensor  # [S, N, T, d] the sources' clean outputs
    delta: torch.Tensor  # [S, N, T, d] clean minus ablated: the relevant part
    coeff: torch.Tensor  # [S, n_slots] share of delta each reader receives
    reads: torch.Tensor  # [S, n_slots] whether the source writes to that reader

    def keep(self, writer: int) -> torch.Tensor:
        """``[S]``: False for the sets whose source is ``writer``."""
        return torch.tensor([w != writer for w in self.writers], device=self.out.device)


@lru_cache(maxsize=8)
def read_table(graph: ComputationalGraph) -> torch.Tensor:
    """``[n_writers, n_slots]``: whether each writer writes to each reader (built once per
    graph: a Python loop over every writer and reader)."""
    table = torch.zeros(len(graph.writers), len(graph.slots), dtype=torch.bool)
    for j, slot in enumerate(graph.slots):
        table[list(slot.writers), j] = True
    return table


def make_sources(
    graph: ComputationalGraph,
    clean: torch.Tensor,
    ablated: torch.Tensor,
    writers: list[int],
    coeff: torch.Tensor,
) -> Sources:
    """Sets for ``writers`` from clean ``[N, T, W, d]`` and ablated ``[N|1, T, W, d]`` writer
    outputs, with ``coeff [S, n_slots]`` (used only where the source writes)."""
    index = torch.tensor(writers, device=clean.device)
    reads = read_table(graph)[writers].to(clean.device)
    out = clean[:, :, index].permute(2, 0, 1, 3)
    delta = out - ablated[:, :, index].permute(2, 0, 1, 3)
    return Sources(writers, out, delta, coeff, reads)


@dataclass
class Stream:
    """Per set, the sums of every non-source writer's pair so far, and the clean residual.

    A set's source is not in its stream: it reaches each reader through ``reader``, as
    ``c * delta`` (relevant) and ``out - c * delta`` (irrelevant), so that every edge out of
    it has its own coefficient ``c``.
    """

    beta: torch.Tensor  # [S, N, T, d]
    gamma: torch.Tensor  # [S, N, T, d]
    clean: torch.Tensor  # [N, T, d]

    def reader(self, sources: Sources, slot: int) -> Part:
        """The input pair of the reader ``graph.slots[slot]``, ``[S, N, T, d]`` each."""
        reads = sources.reads[:, slot].to(sources.out.dtype)[:, None, None, None]
        share = sources.coeff[:, slot][:, None, None, None] * reads * sources.delta
        return self.beta + share, self.gamma + sources.out * reads - share

    def add(self, part: Part, clean: torch.Tensor, keep: torch.Tensor) -> None:
        """Add one writer's pair ``[S, N, T, d]`` in the sets it is not the source of
        (``keep [S]``) and its clean output ``[N, T, d]`` to the clean residual."""
        mask = keep.to(part[0].dtype)[:, None, None, None]
        self.beta = self.beta + part[0] * mask
        self.gamma = self.gamma + part[1] * mask
        self.clean = self.clean + clean


@dataclass(frozen=True)
class CDOutput:
    """The decomposed logits at the read positions and, if recorded, every writer's pair."""

    beta: torch.Tensor  # [S, N, P, V] the relevant part of the logits
    gamma: torch.Tensor  # [S, N, P, V] the rest
    clean: torch.Tensor  # [N, P, V] the clean logits (beta + gamma)
    writers: tuple[Part, ...] | None = None  # per writer, [S, N, T, d] each (0 for its source)


def cd_forward(
    cd: CDModel,
    graph: ComputationalGraph,
    clean_outputs: torch.Tensor,
    sources: Sources,
    positions: torch.Tensor,
    rules: CDRules,
    record: bool = False,
) -> CDOutput:
    """Decompose a batch's run into each set's (relevant, irrelevant) pair, layer by layer.

    ``clean_outputs [N, T, W, d]`` are the clean writer outputs (the full activations the
    rules read); ``positions [N, P]`` where the logits are read. Gradients flow to
    ``sources.coeff``.
    """
    weights = cd.weights
    embedded = clean_outputs[:, :, 0]
    zeros = torch.zeros_like(sources.out)
    stream = Stream(zeros, zeros, torch.zeros_like(embedded))
    recorded: list[Part] = []

    def add(writer: int, part: Part) -> None:
        stream.add(part, clean_outputs[:, :, writer], sources.keep(writer))
        if record:
            recorded.append(part)

    add(0, (zeros, embedded.expand_as(zeros)))
    slot_ids = {slot: i for i, slot in enumerate(graph.slots)}
    for index, layer in enumerate(weights.layers):
        slots = [slot for slot in graph.slots if slot.layer == index]
        heads = [slot_ids[slot] for slot in slots if slot.receiver is not None]
        mlp_slot = None if graph.attn_only else slot_ids[slots[-1]]
        mlp_in = None
        if mlp_slot is not None and graph.parallel_attn_mlp:
            mlp_in = (stream.reader(sources, mlp_slot), stream.clean)
        outs = _heads(weights, layer, stream, sources, heads, rules)
        for head, part in enumerate(zip(*outs, strict=True)):
            add(graph.writer_index(index, head), part)
        stream.gamma = stream.gamma + layer.b_o
        stream.clean = stream.clean + layer.b_o
        mlp = cd.mlps[index]
        if mlp_slot is not None and mlp is not None:
            if mlp_in is None:
                mlp_in = (stream.reader(sources, mlp_slot), stream.clean)
            writer = graph.writer_index(index)
            add(writer, mlp_part(mlp, layer, *mlp_in, clean_outputs[:, :, writer], rules))
    beta, gamma, clean = _logits(weights, stream, sources, len(graph.slots) - 1, positions, rules)
    return CDOutput(beta, gamma, clean, tuple(recorded) if record else None)


def _heads(
    weights: ModelWeights,
    layer: LayerWeights,
    stream: Stream,
    sources: Sources,
    heads: list[int],
    rules: CDRules,
) -> Part:
    """Every head's output pair ``[H, S, N, T, d]`` (without ``b_O``), from its q/k/v slots
    (``heads``: all q, then all k, then all v slot indices)."""
    n_heads = layer.w_q.shape[0]
    x = stream.clean
    pairs = [stream.reader(sources, slot) for slot in heads]
    if rules.attention == "values":
        v_in = pairs[2 * n_heads :]
        beta = torch.stack([p[0] for p in v_in])
        gamma = torch.stack([p[1] for p in v_in])
        normed = norm_part(layer.ln1, x, (beta, gamma), rules.bias)
        no_bias = torch.zeros_like(layer.b_v)
        values = [project(p, layer.w_v, no_bias) for p in normed]
        values_part = split_bias((values[0], values[1]), layer.b_v[:, None, None, None], rules.bias)
        pattern = _pattern(weights, layer, x)  # [H, N, T, T], from the full activation
        z = [torch.einsum("hnqt,hsntd->hsnqd", pattern, v) for v in values_part]
    else:
        gammas = torch.stack([p[1] for p in pairs]).unflatten(0, (3, n_heads))
        full = x.expand(n_heads, 1, *x.shape)
        z_full = attention(layer, full, torch.stack((full, full)), weights.attn_scale,
                           weights.causal)  # fmt: skip
        z_gamma = attention(layer, gammas[0], gammas[1:], weights.attn_scale, weights.causal)
        z = [z_full - z_gamma, z_gamma]
    return head_outputs(z[0], layer.w_o), head_outputs(z[1], layer.w_o)


def _pattern(weights: ModelWeights, layer: LayerWeights, x: torch.Tensor) -> torch.Tensor:
    """Each head's attention pattern ``[H, N, T, T]`` on the full residual ``x [N, T, d]``."""
    n_heads = layer.w_q.shape[0]
    normed = layer.ln1(x).expand(n_heads, *x.shape)
    q = project(normed, layer.w_q, layer.b_q)
    k = project(normed, layer.w_k, layer.b_k)
    scores = q @ k.mT / weights.attn_scale
    if weights.causal:
        t = x.shape[1]
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    return torch.softmax(scores, dim=-1)


def mlp_part(
    mlp: MLPWeights,
    layer: LayerWeights,
    part: Part,
    x: torch.Tensor,
    clean: torch.Tensor,
    rules: CDRules,
) -> Part:
    """The MLP's output pair from its input pair and full input ``x [N, T, d]``: norm, ``W_in``,
    the activation at the full pre-activation, ``W_out``. ``clean [N, T, d]`` is the MLP's own
    output, against which the formula is checked."""
    normed_full = layer.ln2(x) if layer.ln2 is not None else x
    h = normed_full @ mlp.w_in + mlp.b_in
    _check(mlp.act(h) @ mlp.w_out + mlp.b_out, clean, "this MLP (dense W_out act(W_in x))")
    normed = norm_part(layer.ln2, x, part, rules.bias) if layer.ln2 is not None else part
    pre = linear_part(normed, mlp.w_in, mlp.b_in, rules.bias)
    post = activation_part(mlp.act, h, pre, rules.activation)
    return linear_part(post, mlp.w_out, mlp.b_out, rules.bias)


def _logits(
    weights: ModelWeights,
    stream: Stream,
    sources: Sources,
    slot: int,
    positions: torch.Tensor,
    rules: CDRules,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The logits' pair ``[S, N, P, V]`` each and the clean logits ``[N, P, V]``."""
    beta, gamma = stream.reader(sources, slot)
    pair = (at_positions(beta, 1, positions), at_positions(gamma, 1, positions))
    x = at_positions(stream.clean, 0, positions)
    normed = norm_part(weights.ln_final, x, pair, rules.bias)
    out = linear_part(normed, weights.w_u, weights.b_u, rules.bias)
    clean = weights.ln_final(x) @ weights.w_u + weights.b_u
    return out[0], out[1], clean
