"""Ground-truth circuits for method recovery, and how a method's scores are graded on them.

tracr programs carry their own ground truth (``circuitreg.workers.tracr.ground_truth_edges``:
the edges the compiled program reads and depends on). The induction toy is trained, not
compiled, so its truth is *derived* from the trained weights rather than listed by hand:
TransformerLens' head detector (via ``circuitreg.workers.toy.heads.detect_heads``) picks the
previous-token heads P and the induction heads I (each role's top group, see below), and the
circuit is the textbook
K-composition induction mechanism (Elhage et al. 2021, Olsson et al. 2022):

* ``input->P<q>``, ``input->P<k>``, ``input->P<v>``: P attends by position to the previous
  token and copies that token's identity, so it reads positions and tokens from the input;
* ``P->I<k>``: K-composition, I's keys are "the token before me", written by P;
* ``input->I<q>``: I's query is the current token, matched against those keys;
* ``input->I<v>``: I copies the attended token's identity from the embedding;
* ``I->logits``: I's output is the prediction.

P->I<q> and P->I<v> are left out on purpose: in the induction mechanism P's output matters
only where I forms keys. A trained model often has several heads in one role (the default toy
has four induction heads scoring 0.418-0.425, the best ahead by 0.007), so each role is a
*group*: the heads ranked above the largest drop in that role's detector scores (its natural
break; the default toy: P = {a0.h3}, I = {a1.h0..a1.h3}). Calling three equally strong
induction heads false would grade every method that finds them as wrong. Every previous-token
head feeds the keys of every later induction head. ``extra_threshold`` replaces the natural
break by a fixed score threshold (the best head of each role always joins).

Grading: ``roc_auc`` of ``|score|`` against the true edge set (the Mann-Whitney U statistic
with mid-ranks for ties; written here because scikit-learn is not a dependency and the
formula is five lines on ``scipy.stats.rankdata``), and precision/recall of a selection.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from scipy.stats import rankdata

from circuitreg.schema.names import edge_name, parse_node
from circuitreg.workers.methods.base import ScoreResult
from circuitreg.workers.tasks.base import TaskData

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


class GroundTruthError(ValueError):
    """A ground truth cannot be derived or graded; the message says why."""


@dataclass(frozen=True)
class InductionGroundTruth:
    """The derived induction circuit: which heads were picked, their scores, and the edges."""

    previous_token_heads: tuple[tuple[str, float], ...]
    induction_heads: tuple[tuple[str, float], ...]
    edges: tuple[str, ...]


def _layer(node: str) -> int:
    layer = parse_node(node).layer
    if layer is None:
        raise GroundTruthError(f"{node!r} is not an attention head")
    return layer


def _above_largest_drop(ranked: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """The heads ranked before the largest fall between consecutive scores (at least one)."""
    if len(ranked) < 2:
        return list(ranked)
    drops = [ranked[i][1] - ranked[i + 1][1] for i in range(len(ranked) - 1)]
    return list(ranked[: drops.index(max(drops)) + 1])


def induction_ground_truth(
    model: TransformerBridge,
    *,
    extra_threshold: float | None = None,
    n_examples: int = 32,
    seed: int = 0,
) -> InductionGroundTruth:
    """Derive the induction circuit of ``model`` from its head-detector scores.

    The best previous-token head must sit in an earlier layer than the best induction head
    (K-composition needs P's output before I reads it); otherwise the model has no
    induction circuit of this shape and ``GroundTruthError`` says so.
    """
    from circuitreg.workers.toy.heads import detect_heads

    scores = detect_heads(
        model,
        kinds=("previous_token_head", "induction_head"),
        n_examples=n_examples,
        seed=seed,
    )
    prev_ranked, ind_ranked = scores["previous_token_head"], scores["induction_head"]
    best_ind = ind_ranked[0]
    earlier = [h for h in prev_ranked if _layer(h[0]) < _layer(best_ind[0])]
    if not earlier:
        raise GroundTruthError(
            f"induction head {best_ind[0]} is in the first layer: no earlier previous-token "
            "head can compose with it"
        )
    best_prev = earlier[0]
    if best_prev != prev_ranked[0]:
        raise GroundTruthError(
            f"the best previous-token head {prev_ranked[0][0]} is not before the best "
            f"induction head {best_ind[0]}; the model has no K-composition induction circuit"
        )
    if extra_threshold is None:
        prev, ind = _above_largest_drop(prev_ranked), _above_largest_drop(ind_ranked)
    else:
        prev = [best_prev] + [h for h in prev_ranked[1:] if h[1] >= extra_threshold]
        ind = [best_ind] + [h for h in ind_ranked[1:] if h[1] >= extra_threshold]
    first_prev = min(_layer(p) for p, _ in prev)
    ind = [h for h in ind if _layer(h[0]) > first_prev]  # the best one always qualifies
    edges: set[str] = set()
    for p, _ in prev:
        edges.update(edge_name("input", p, r) for r in ("q", "k", "v"))
    for i, _ in ind:
        edges.update({edge_name("input", i, "q"), edge_name("input", i, "v")})
        edges.add(edge_name(i, "logits"))
        edges.update(edge_name(p, i, "k") for p, _ in prev if _layer(p) < _layer(i))
    return InductionGroundTruth(tuple(prev), tuple(ind), tuple(sorted(edges)))


def truth_mask(edges: Sequence[str], truth: Collection[str]) -> torch.Tensor:
    """Boolean ``[n_edges]``: which of the graph's ``edges`` are true; unknown names refused."""
    known = set(edges)
    missing = sorted(set(truth) - known)
    if missing:
        raise GroundTruthError(f"true edge(s) not in the graph: {', '.join(missing)}")
    return torch.tensor([e in truth for e in edges], dtype=torch.bool)


def roc_auc(scores: torch.Tensor, positives: torch.Tensor) -> float:
    """ROC AUC of ``scores`` for the ``positives`` mask (Mann-Whitney U / (n_pos * n_neg)).

    Ties get mid-ranks, so a method that scores every edge alike gets 0.5.
    """
    if scores.shape != positives.shape:
        raise GroundTruthError(f"scores {tuple(scores.shape)} and truth differ in shape")
    n_pos = int(positives.sum())
    n_neg = positives.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        raise GroundTruthError("ROC AUC needs at least one true and one false edge")
    ranks = rankdata(scores.detach().double().cpu().numpy())
    rank_sum = float(ranks[positives.cpu().numpy()].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


# Recovery runs each method in double precision and grades scores within this many machine
# epsilons of the largest |score| as 0. An edge whose effect passes a saturated softmax, a
# flat piece of a compiled MLP or two terms that cancel has a first-order score of exactly 0;
# computed, it is rounding, whose sign and size follow the precision, not the model. Measured
# (tracr, zero ablation, relative to the largest): EAP on ``hist`` 7.1e-7 in float32 and
# 1.8e-15 in float64; EAP-IG on ``reverse``, ``input->m1``, 1.5e-9 and 1.7e-18. In float32
# such rounding overlaps real signal (path patching on ``reverse``: 5.4e-7 in both
# precisions), so no float32 threshold separates them. In float64, of the runs compared
# (EAP and EAP-IG on ``hist``, ``count_a``, ``reverse``, ``frac_prevs``) the smallest score
# above rounding was 5.6e-8 (EAP on ``frac_prevs``), far above 100 epsilons (2.2e-14).
GRADING_DTYPE = torch.float64
ROUNDING_EPSILONS = 100


def above_rounding(scores: torch.Tensor, relative: float) -> torch.Tensor:
    """``scores`` with every entry within ``relative`` of the largest magnitude set to 0."""
    largest = float(scores.abs().max()) if scores.numel() else 0.0
    return torch.where(scores.abs() <= relative * largest, 0.0, scores)


def precision_recall(selected: torch.Tensor, positives: torch.Tensor) -> tuple[float, float]:
    """Precision and recall of a boolean edge selection (precision 0 if nothing selected)."""
    hits = int((selected & positives).sum())
    chosen, true = int(selected.sum()), int(positives.sum())
    return (hits / chosen if chosen else 0.0), (hits / true if true else 0.0)


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` edges with the largest ``|score|``, never an edge scored exactly 0.

    Zero-scored edges are left out because the method said nothing about them: picking
    some of many tied zeros by edge order would credit a method for the graph's layout.
    """
    magnitude = scores.detach().abs().cpu()
    order = torch.argsort(magnitude, descending=True, stable=True)
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    mask[order[:k]] = True
    return mask & (magnitude > 0)


@dataclass(frozen=True)
class Recovery:
    """How well one method's result recovers a true edge set."""

    method: str
    roc_auc: float
    precision: float
    recall: float
    n_selected: int
    selection: str


def own_circuit(result: ScoreResult) -> tuple[torch.Tensor, str] | None:
    """The circuit a method returns itself (ACDC's kept edges, a mask's positive logits)."""
    if result.circuit is not None:
        return result.circuit.bool().cpu(), "own circuit"
    if "mask_logits" in result.extra:
        return torch.tensor(result.extra["mask_logits"]) > 0, "own circuit (logit > 0)"
    return None


def grade(
    result: ScoreResult, edges: Sequence[str], truth: Collection[str], rounding: float = 0.0
) -> Recovery:
    """ROC AUC of ``|edge_scores|`` and precision/recall of the method's selection.

    The selection is the method's own circuit when it returns one (ACDC, mask pruning),
    otherwise the top-k edges by ``|score|`` with k the number of true edges. Scores within
    ``rounding`` of the largest (relative) count as 0 (``above_rounding``).
    """
    positives = truth_mask(edges, truth)
    scores = above_rounding(result.edge_scores.detach().double().cpu(), rounding)
    own = own_circuit(result)
    if own is None:
        selected, how = top_k_mask(scores, int(positives.sum())), f"top-{int(positives.sum())}"
    else:
        selected, how = own
    precision, recall = precision_recall(selected, positives)
    return Recovery(
        method=result.method,
        roc_auc=roc_auc(scores.abs(), positives),
        precision=precision,
        recall=recall,
        n_selected=int(selected.sum()),
        selection=how,
    )


def recover(
    method: str,
    model: TransformerBridge,
    task: TaskData,
    truth: Collection[str],
    params: Mapping[str, Any] | None = None,
) -> tuple[Recovery, ScoreResult]:
    """Run a registered method on ``task`` with the task's own metric and grade it.

    ``params`` override the method's defaults; the metric defaults to the task's
    ``default_metric`` and the ablation to resampling from the task's corrupted prompts. The
    method runs in ``GRADING_DTYPE`` (the model is converted and restored), so that no
    exactly-zero score is ranked by its rounding (``ROUNDING_EPSILONS``).
    """
    from circuitreg.workers.graph import ComputationalGraph
    from circuitreg.workers.methods.registry import default_registry

    info = default_registry().get(method)
    config = info.config({"metric": task.default_metric, "ablation": "resample", **(params or {})})
    graph = ComputationalGraph.from_model(model)
    dtype = next(model.parameters()).dtype
    model.to(GRADING_DTYPE)  # float32 -> float64 -> float32 is exact
    try:
        result = info.fn(model, task, graph, config)
    finally:
        model.to(dtype)
    rounding = ROUNDING_EPSILONS * torch.finfo(GRADING_DTYPE).eps
    return grade(result, graph.edges, truth, rounding), result
