"""Differentiable mask pruning recovers a planted path at the target sparsity."""

from __future__ import annotations

import math

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge

from circuitreg.workers.engine import InterventionEngine
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.base import ConfigError, ScoreResult
from circuitreg.workers.methods.masks import MaskPruningConfig, mask_pruning
from circuitreg.workers.methods.masks_config import AUTO_SCORE_FUNCTION_MAX_EDGES
from circuitreg.workers.methods.registry import default_registry
from circuitreg.workers.methods.selection import Selection, select_edges
from circuitreg.workers.tasks.base import TaskData

VOCAB, D_MODEL, SEQ, N = 16, 64, 8, 16
PLANTED = {"input->a0.h0<v>", "a0.h0->a1.h1<v>", "a1.h1->logits"}
WEAK = {"input->a0.h1<v>", "a0.h1->logits"}


pytestmark = pytest.mark.usefixtures("one_thread")


def planted_model() -> TransformerBridge:
    """Two attention-only layers whose logits read one subspace, reached by one strong path.

    Queries and keys are zero, so every head attends uniformly. a0.h0 copies the token
    identity (dims 0-15) to dims 16-31, a1.h1 copies dims 16-31 to 32-47, and the unembedding
    reads only dims 32-47: input -> a0.h0<v> -> a1.h1<v> -> logits carries the answer. a0.h1
    copies tokens straight into dims 32-47 at 0.2 strength: a weaker two-edge path the
    optimiser must give up at the planted path's sparsity. The other five heads have random
    weights but write only to dims 48-63, which nothing reads.
    """
    model = TransformerBridge.boot_native(
        dict(
            n_layers=2,
            d_model=D_MODEL,
            n_heads=4,
            d_head=16,
            d_vocab=VOCAB,
            n_ctx=16,
            attn_only=True,
            act_fn="gelu",
            normalization_type=None,
            seed=0,
        )
    )
    model.eval()
    params = dict(model.named_parameters())

    def attn(layer: int, name: str) -> torch.Tensor:
        prefix = f"layers.{layer}._original_component.attn._original_component"
        return params[f"{prefix}.{name}._original_component.weight"]  # [out, in]

    eye, gen = torch.eye(16), torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        params["tok_embed._original_component.weight"][:, 0:16] = eye
        attn(0, "v")[0:16, 0:16] = eye  # a0.h0 value reads the token
        attn(0, "o")[16:32, 0:16] = eye
        attn(0, "v")[16:32, 0:16] = eye  # a0.h1 value reads the token
        attn(0, "o")[32:48, 16:32] = 0.2 * eye
        attn(1, "v")[16:32, 16:32] = eye  # a1.h1 value reads a0.h0's output
        attn(1, "o")[32:48, 16:32] = eye
        params["head._original_component.weight"][:, 32:48] = eye
        for layer, heads in ((0, (2, 3)), (1, (0, 2, 3))):
            for head in heads:
                rows = slice(16 * head, 16 * head + 16)
                for name in ("q", "k", "v"):
                    attn(layer, name)[rows] = torch.randn(16, D_MODEL, generator=gen) * 0.3
                attn(layer, "o")[48:64, rows] = torch.randn(16, 16, generator=gen) * 0.3
    assert torch.equal(model.W_V[1, 1][16:32], eye) and torch.equal(model.W_U[32:48], eye)
    return model


def planted_task() -> TaskData:
    """Token 0 (the answer) appears three times; the corruption turns it into token 1."""
    gen = torch.Generator().manual_seed(1)
    clean = torch.randint(2, VOCAB, (N, SEQ), generator=gen)
    for row in clean:
        row[torch.randperm(SEQ, generator=gen)[:3]] = 0
    return TaskData(
        name="planted",
        spec={},
        clean=clean,
        corrupted=torch.where(clean == 0, torch.ones_like(clean), clean),
        positions=torch.full((N, 1), SEQ - 1),
        answers=torch.zeros(N, 1, dtype=torch.long),
        distractors=torch.ones(N, 1, dtype=torch.long),
        corruption="every 0 replaced by 1",
    )


def _path_values(tokens: torch.Tensor) -> tuple[float, float]:
    """Mean logit difference carried by the strong and the weak path, computed by hand."""
    signal = (tokens == 0).double() - (tokens == 1).double()  # [N, T]
    prefix_means = signal.cumsum(-1) / torch.arange(1, SEQ + 1)  # a0.h0 output per position
    return float(prefix_means.mean(-1).mean()), float(0.2 * prefix_means[:, -1].mean())


def _learned(result: ScoreResult, graph: ComputationalGraph) -> set[str]:
    return {graph.edges[i] for i, logit in enumerate(result.extra["mask_logits"]) if logit > 0}


@pytest.mark.parametrize("parameterisation", ["hard_concrete", "gumbel_sigmoid", "bernoulli_score"])
def test_mask_pruning_recovers_the_planted_path_at_the_target_sparsity(
    parameterisation: str,
) -> None:
    model, task = planted_model(), planted_task()
    graph = ComputationalGraph.from_model(model)
    target = 1 - len(PLANTED) / graph.n_edges
    config = MaskPruningConfig(
        parameterisation=parameterisation,  # type: ignore[arg-type]
        target_sparsity=target,
        steps=200,
        seed=0,
    )
    weights_before = [p.detach().clone() for p in model.parameters()]
    result = mask_pruning(model, task, graph, config)

    assert _learned(result, graph) == PLANTED
    assert result.extra["achieved_sparsity"] == pytest.approx(target)
    # The scores rank the planted path first, and the shared selection returns it.
    chosen = select_edges(result.edge_scores, graph, Selection("threshold", 0.5))
    assert set(graph.edges_from_mask(chosen)) == PLANTED
    top = select_edges(result.edge_scores, graph, Selection("top_k", len(PLANTED)))
    assert set(graph.edges_from_mask(top)) == PLANTED
    # Uniform attention makes both paths averages of answer-minus-distractor indicators: the
    # circuit keeps the strong path clean while the weak one carries the corrupted prompt.
    strong, weak = _path_values(task.clean)
    assert result.extra["clean_metric"] == pytest.approx(strong + weak, rel=1e-4)
    assert result.extra["circuit_metric"] == pytest.approx(
        strong + _path_values(task.corrupted)[1], rel=1e-4
    )
    # The score function differentiates only the masks' log-probabilities, not the model.
    assert result.n_backward == (0 if parameterisation == "bernoulli_score" else 200)
    assert result.params["parameterisation"] == parameterisation
    assert result.extra["warnings"] == [] and result.extra["recovered_fraction"] > 0.5
    assert set(graph.edges_from_mask(result.circuit)) == PLANTED
    # Training the masks leaves the model untouched, gradients included.
    assert all(torch.equal(a, b) for a, b in zip(weights_before, model.parameters(), strict=True))
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("parameterisation", ["auto", "hard_concrete"])
def test_fixed_lambda_and_kl_objective_prune_edges_that_do_nothing(parameterisation: str) -> None:
    model, task = planted_model(), planted_task()
    graph = ComputationalGraph.from_model(model)
    config = MaskPruningConfig(
        parameterisation=parameterisation,  # type: ignore[arg-type]
        sparsity_control="lambda",
        sparsity_lambda=0.5,
        objective="kl",
        steps=120,
        lr=0.1,
    )
    result = mask_pruning(model, task, graph, config)
    learned = _learned(result, graph)
    assert learned >= PLANTED
    assert len(learned) <= 5, f"edges with no effect survived: {sorted(learned - PLANTED - WEAK)}"


def test_a_circuit_that_keeps_nothing_of_the_metric_is_reported() -> None:
    model, task = planted_model(), planted_task()
    graph = ComputationalGraph.from_model(model)
    config = MaskPruningConfig(sparsity_control="lambda", sparsity_lambda=1e3, steps=5, lr=5.0)
    result = mask_pruning(model, task, graph, config)
    assert result.extra["circuit_edges"] == 0
    assert result.extra["recovered_fraction"] == pytest.approx(0.0, abs=1e-6)
    [warning] = result.extra["warnings"]
    assert "keeps 0% of the clean-vs-ablated metric gap" in warning
    assert "score function's noise" in warning  # auto took it on this small graph


def test_the_same_seed_gives_the_same_masks() -> None:
    model, task = planted_model(), planted_task()
    graph = ComputationalGraph.from_model(model)
    config = MaskPruningConfig(parameterisation="gumbel_sigmoid", steps=15, seed=3)
    first = mask_pruning(model, task, graph, config)
    torch.manual_seed(123)  # the caller's random state must not matter
    second = mask_pruning(model, task, graph, config)
    assert first.extra["mask_logits"] == second.extra["mask_logits"]


def test_config_round_trips_and_refuses_bad_values() -> None:
    config = MaskPruningConfig(parameterisation="gumbel_sigmoid", target_sparsity=0.9)
    assert MaskPruningConfig.from_dict(config.to_dict()) == config
    from_cli = MaskPruningConfig.from_dict({"steps": "50", "parameterisation": "hard_concrete"})
    assert from_cli.steps == 50
    with pytest.raises(ConfigError, match="parameterisation"):
        MaskPruningConfig.from_dict({"parameterisation": "sigmoid"})
    with pytest.raises(ConfigError, match="target_sparsity"):
        MaskPruningConfig(target_sparsity=1.0)
    with pytest.raises(ConfigError, match="temperature"):
        MaskPruningConfig(temperature=0.0)
    with pytest.raises(ConfigError, match="steps"):
        MaskPruningConfig(steps=0)


def test_resolve_fills_the_defaults_each_parameterisation_needs() -> None:
    auto = MaskPruningConfig()
    small, large = (
        auto.resolve(AUTO_SCORE_FUNCTION_MAX_EDGES),
        auto.resolve(AUTO_SCORE_FUNCTION_MAX_EDGES + 1),
    )
    assert (small.parameterisation, small.lr, small.mask_samples, small.temperature) == (
        "bernoulli_score", 0.2, 32, None,
    )  # fmt: skip
    assert (large.parameterisation, large.lr, large.mask_samples, large.temperature) == (
        "hard_concrete", 0.1, 8, pytest.approx(2 / 3),
    )  # fmt: skip
    lam = MaskPruningConfig(sparsity_control="lambda", parameterisation="gumbel_sigmoid")
    assert (lam.resolve(10).lr, lam.resolve(10).temperature) == (0.03, 1.0)
    assert MaskPruningConfig(sparsity_control="lambda").resolve(10).lr == 0.2  # score function
    assert MaskPruningConfig(sparsity_control="lambda", lr=0.2).resolve(10_000).lr == 0.2
    config = MaskPruningConfig(sparsity_control="lambda")
    assert MaskPruningConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="lr"):
        MaskPruningConfig(lr=0.0)
    with pytest.raises(ConfigError, match="no temperature"):
        MaskPruningConfig(parameterisation="bernoulli_score", temperature=1.0)
    with pytest.raises(ConfigError, match="mask_samples >= 2"):
        MaskPruningConfig(parameterisation="bernoulli_score", mask_samples=1)
    with pytest.raises(ConfigError, match="auto chose bernoulli_score for 10 edges"):
        MaskPruningConfig(temperature=0.5).resolve(10)
    assert MaskPruningConfig(temperature=0.5).resolve(10_000).temperature == 0.5


def _answer_kept(
    logits: torch.Tensor, task: TaskData, clean_logprobs: torch.Tensor
) -> torch.Tensor:
    """1 where the answer's logit beats the distractor's by at least 0.9 of the clean margin.

    A step function of the logits: flat almost everywhere, so a relaxation's gradient through
    it is zero, as through tracr's discretising MLPs.
    """
    last = logits[..., -1, :]
    answer = last.gather(-1, task.answers[:, :1].expand(*last.shape[:-1], 1)).squeeze(-1)
    other = last.gather(-1, task.distractors[:, :1].expand(*last.shape[:-1], 1)).squeeze(-1)
    clean = clean_logprobs[..., -1, :]
    margin = clean.gather(-1, task.answers[:, :1]) - clean.gather(-1, task.distractors[:, :1])
    return (answer - other >= 0.9 * margin.squeeze(-1)).float()


def test_the_score_function_learns_a_step_a_relaxation_cannot() -> None:
    model, task = planted_model(), planted_task()
    graph = ComputationalGraph.from_model(model)

    def run(kind: str) -> ScoreResult:
        config = MaskPruningConfig(
            parameterisation=kind,  # type: ignore[arg-type]
            metric=_answer_kept,
            sparsity_control="lambda",
            lr=0.1,
            steps=150,
        )
        return mask_pruning(model, task, graph, config)

    score, relaxed = run("bernoulli_score"), run("hard_concrete")
    assert _learned(score, graph) >= PLANTED and score.extra["warnings"] == []
    assert score.extra["recovered_fraction"] == pytest.approx(1.0)
    assert not _learned(relaxed, graph) >= PLANTED
    [warning] = relaxed.extra["warnings"]  # unfaithful, and the way out is named
    assert "parameterisation=bernoulli_score" in warning
    # The stored parameters are what ran (auto's choices filled in), and they rerun as given.
    assert score.params["mask_samples"] == 32 and score.params["lr"] == 0.1
    assert score.extra["requested"]["mask_samples"] is None
    # A step's masks (32 and 8) go in as few engine passes as one pass can hold; no backward
    # runs through the model for the score function.
    per_pass = InterventionEngine(model, graph, task, set_batch=32).max_sets_per_pass
    extra = 150 * (math.ceil(32 / per_pass) - math.ceil(8 / per_pass))
    assert score.n_forward == relaxed.n_forward + extra and relaxed.n_forward > 150
    assert (score.n_backward, relaxed.n_backward) == (0, 150)
    resolved = MaskPruningConfig.from_dict({**score.params, "metric": _answer_kept})
    assert resolved.to_dict() == score.params


def test_mask_pruning_is_registered() -> None:
    info = default_registry().get("mask_pruning")
    assert info.config_cls is MaskPruningConfig
    assert {o["name"] for o in info.describe()["options"]} >= {
        "parameterisation", "target_sparsity", "sparsity_lambda", "steps", "lr", "temperature",
        "seed",
    }  # fmt: skip
