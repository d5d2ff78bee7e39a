"""Ensembles of methods, bootstrap sign-consistency and mask pruning's EAP-IG warm start.

Run on tracr ``frac_prevs`` (23 edges, 5 true ones read off the compiled weights) with zero
ablation, where EAP and EAP-IG both recover the truth, so every composite is checked against
its members run directly.
"""

from __future__ import annotations

from functools import cache

import pytest
import torch

from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.groundtruth import recover
from circuitreg.workers.methods.base import ConfigError
from circuitreg.workers.methods.bootstrap import (
    BootstrapConfig,
    bootstrap,
    resample_indices,
    sign_agreement,
)
from circuitreg.workers.methods.eap import EAPConfig, eap
from circuitreg.workers.methods.eap_ig import EAPIGConfig, eap_ig
from circuitreg.workers.methods.ensemble import EnsembleConfig, combine_scores, ensemble
from circuitreg.workers.methods.masks import (
    MaskPruningConfig,
    mask_pruning,
    rank_fractions,
    warm_logits,
)
from circuitreg.workers.methods.registry import default_registry
from circuitreg.workers.models import LoadedModel, load_model
from circuitreg.workers.tasks.base import TaskContext, TaskData
from circuitreg.workers.tasks.registry import build_task
from circuitreg.workers.tracr import ground_truth_edges

pytestmark = pytest.mark.usefixtures("one_thread")
ZERO = {"ablation": "zero"}


@cache
def frac_prevs() -> tuple[LoadedModel, TaskData, ComputationalGraph]:
    loaded = load_model("tracr:frac_prevs", "cpu")
    task = build_task("tracr:program=frac_prevs,n=16", context=TaskContext.from_loaded(loaded))
    return loaded, task, ComputationalGraph.from_model(loaded.bridge)


def test_composites_are_registered_and_check_their_members() -> None:
    names = set(default_registry().names())
    assert {"ensemble", "bootstrap"} <= names
    config = EnsembleConfig.from_dict({"methods": "eap, eap_ig", "member_params": "eap_ig.steps=3"})
    (_, first), (_, second) = config.members()
    assert first == EAPConfig() and second == EAPIGConfig(steps=3)
    assert default_registry().config_from_dict(config.to_dict()) == config
    for bad, message in [
        ({"methods": "eap"}, "two or more methods"),
        ({"methods": "eap,eap"}, "twice"),
        ({"methods": "eap,nope"}, "unknown method 'nope'"),
        ({"methods": "eap,ensemble"}, "cannot be a member"),
        ({"member_params": "acdc.tau=1"}, "not one of eap, eap_ig"),
        ({"member_params": "eap_ig.stepz=1"}, "member 'eap_ig': unknown parameter"),
        ({"member_params": "steps=1"}, "not method.option=value"),
        ({"combine": "median"}, "combine"),
    ]:
        with pytest.raises(ConfigError, match=message):
            EnsembleConfig.from_dict(bad)
    base = BootstrapConfig.from_dict({"base_method": "eap_ig", "base_params": "steps=2"}).base()
    assert base[1] == EAPIGConfig(steps=2)
    with pytest.raises(ConfigError, match="cannot be a member"):
        BootstrapConfig(base_method="bootstrap")
    with pytest.raises(ConfigError, match="sign_agreement"):
        BootstrapConfig(sign_agreement=1.5)


def test_combine_scores_normalises_each_member_by_its_largest_score() -> None:
    a = torch.tensor([2.0, -1.0, 0.0, 0.5], dtype=torch.float64)
    b = torch.tensor([10.0, 10.0, -20.0, 0.0], dtype=torch.float64)
    # normalised |.|: a -> [1, .5, 0, .25], b -> [.5, .5, 1, 0]
    assert combine_scores([a, b], "mean").tolist() == [0.75, 0.5, -0.5, 0.125]
    assert combine_scores([a, b], "min").tolist() == [0.5, 0.5, -0.0, 0.0]
    assert combine_scores([a, b], "max").tolist() == [1.0, 0.5, -1.0, 0.25]
    # signs: mean of the signed normalised scores ([.75, 0, -.5, .125]); 0 counts as +
    assert combine_scores([a, torch.zeros(4, dtype=torch.float64)], "mean").tolist() == [
        0.5,
        -0.25,
        0.0,
        0.125,
    ]


def test_an_ensemble_is_its_members_normalised_and_combined() -> None:
    loaded, task, graph = frac_prevs()
    members = [eap(loaded.bridge, task, graph, EAPConfig(**ZERO)),
               eap_ig(loaded.bridge, task, graph, EAPIGConfig(**ZERO, steps=3))]  # fmt: skip
    for combine in ("mean", "min", "max"):
        config = EnsembleConfig(**ZERO, combine=combine, member_params="eap_ig.steps=3")
        result = ensemble(loaded.bridge, task, graph, config)
        # EAP and EAP-IG report the effect of ablating an edge (negative helps): negated.
        expected = combine_scores([-m.edge_scores.double() for m in members], combine)
        torch.testing.assert_close(result.edge_scores, expected.float(), rtol=1e-5, atol=1e-6)
        assert result.n_forward == sum(m.n_forward for m in members)
        assert result.n_backward == sum(m.n_backward for m in members)
        assert [m["params"] for m in result.extra["members"]] == [m.params for m in members]
        assert result.params["combine"] == combine and result.circuit is None
    truth = ground_truth_edges(loaded.info["fixture"], task.seq_len - 1)
    graded, _ = recover("ensemble", loaded.bridge, task, truth, ZERO)
    assert graded.roc_auc >= 0.95


def test_sign_agreement_counts_the_resamples_that_keep_the_sign() -> None:
    point = torch.tensor([1.0, -2.0, 0.0, 3.0])
    resampled = torch.tensor([[1.0, 1.0, 0.0, 0.0], [2.0, -1.0, 1.0, 1.0], [3.0, -1.0, 0.0, 1.0]])
    assert sign_agreement(point, resampled).tolist() == pytest.approx([1.0, 2 / 3, 0.0, 2 / 3])
    draws = resample_indices(10, 4, seed=3)
    assert draws.shape == (4, 10) and int(draws.min()) >= 0 and int(draws.max()) < 10
    assert torch.equal(draws, resample_indices(10, 4, seed=3))
    assert not torch.equal(draws, resample_indices(10, 4, seed=4))


def test_bootstrap_keeps_the_edges_whose_sign_is_stable() -> None:
    loaded, task, graph = frac_prevs()
    config = BootstrapConfig(ablation="resample", n_bootstrap=4, sign_agreement=0.75, seed=1)
    result = bootstrap(loaded.bridge, task, graph, config)
    point = -eap(loaded.bridge, task, graph, EAPConfig()).edge_scores.double()  # oriented
    resampled = torch.stack(
        [-eap(loaded.bridge, task.subset(idx), graph, EAPConfig()).edge_scores.double()
         for idx in resample_indices(task.n_examples, 4, seed=1)]
    )  # fmt: skip
    agreement = sign_agreement(point, resampled)
    assert result.extra["sign_agreement"] == pytest.approx(agreement.tolist())
    expected = torch.where(agreement >= 0.75, point, torch.zeros_like(point)).float()
    torch.testing.assert_close(result.edge_scores, expected, rtol=1e-5, atol=1e-7)
    runs = [result.extra["base"], *result.extra["resample_runs"]]
    assert len(runs) == 5
    assert result.n_forward == sum(r["n_forward"] for r in runs) > 0
    assert result.n_backward == sum(r["n_backward"] for r in runs) == 5 * runs[0]["n_backward"]
    scored = int((point != 0).sum())
    assert result.extra["stable_edges"] + result.extra["dropped_edges"] == scored
    # The same seed draws the same resamples.
    again = bootstrap(loaded.bridge, task, graph, config)
    assert torch.equal(again.edge_scores, result.edge_scores)


def test_rank_fractions_and_the_warm_start_mapping() -> None:
    scores = torch.tensor([0.0, -4.0, 1.0, 0.0, 2.0])
    # |score| ranks: 0, 0 share 1.5; 1 -> 3; 2 -> 4; 4 -> 5; fractions (rank - 1) / 4
    assert rank_fractions(scores).tolist() == [0.125, 1.0, 0.5, 0.125, 0.75]
    assert warm_logits(scores, 3.0).tolist() == pytest.approx([-2.25, 3.0, 0.0, -2.25, 1.5])
    assert rank_fractions(torch.tensor([5.0])).tolist() == [1.0]
    with pytest.raises(ConfigError, match="warm_start"):
        MaskPruningConfig(warm_start="eap")  # type: ignore[arg-type]


def test_mask_pruning_warm_started_from_eap_ig_counts_its_passes() -> None:
    loaded, task, graph = frac_prevs()
    cold_config = MaskPruningConfig(ablation="zero", sparsity_control="lambda", steps=1, lr=1e-9)
    warm_config = cold_config.replaced(warm_start="eap_ig", warm_start_steps=3)
    warm = mask_pruning(loaded.bridge, task, graph, warm_config)
    cold = mask_pruning(loaded.bridge, task, graph, cold_config)
    ig = eap_ig(loaded.bridge, task, graph, EAPIGConfig(**ZERO, steps=3))
    # One step at lr 1e-9 leaves the logits where they started: the documented mapping.
    expected = warm_logits(ig.edge_scores, 3.0).float()
    torch.testing.assert_close(torch.tensor(warm.extra["mask_logits"]), expected, atol=1e-5, rtol=0)
    assert cold.extra["mask_logits"] == pytest.approx([3.0] * graph.n_edges, abs=1e-5)
    assert warm.n_forward == cold.n_forward + ig.n_forward
    assert warm.n_backward == cold.n_backward + ig.n_backward
    record = warm.extra["warm_start"]
    assert record["method"] == "eap_ig" and record["params"] == ig.params
    assert (record["n_forward"], record["n_backward"]) == (ig.n_forward, ig.n_backward)
    assert cold.extra["warm_start"] is None
    assert warm.params["warm_start"] == "eap_ig"
