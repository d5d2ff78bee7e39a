"""RelP: EAP where the LRP rules change nothing, conservation where they hold, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge
from typer.testing import CliRunner

from circuitreg.cli import app
from circuitreg.schema.circuit import CircuitDocument
from circuitreg.workers.engine import InterventionEngine
from circuitreg.workers.engine.relevance import RelevanceRules
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.eap import EAPConfig, eap
from circuitreg.workers.methods.relp import RelPConfig, relp
from circuitreg.workers.tasks.induction import induction_task

from .tiny_bridges import ATTN_ONLY, WITH_MLP

pytestmark = pytest.mark.usefixtures("one_thread")

TASK = dict(n=5, seq_len=8, d_vocab=40, seed=1)


def _task() -> Any:
    return induction_task(TASK["n"], TASK["seq_len"], TASK["d_vocab"], seed=TASK["seed"])


def _zeroed(model: Any, keep: Any) -> Any:
    """``model`` with every parameter whose dotted name ``keep`` rejects set to 0."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not keep(name.split(".")):
                param.zero_()
    return model


def _input_independent_attention(cfg: dict[str, Any]) -> Any:
    """W_Q = W_K = 0: every attention pattern is the same whatever the input."""
    model = TransformerBridge.boot_native(cfg)
    return _zeroed(model, lambda parts: not ("attn" in parts and ({"q", "k"} & set(parts))))


@pytest.mark.parametrize(
    "cfg",
    [ATTN_ONLY, {**WITH_MLP, "normalization_type": None, "act_fn": "relu", "seed": 3}],
    ids=["attn-only", "relu-mlp-no-norm"],
)
def test_relp_equals_eap_where_no_rule_changes_anything(cfg: dict[str, Any]) -> None:
    """No norm, input-independent patterns (the softmax passes no gradient to hold
    constant) and ReLU (act(x)/x is its derivative): RelP is EAP, edge by edge."""
    model = _input_independent_attention(cfg)
    engine = InterventionEngine(model, ComputationalGraph.from_model(model), _task())
    assert float(engine.weights.layers[1].w_q.abs().max()) == 0.0
    graph, task = engine.graph, _task()
    plain = eap(model, task, graph, EAPConfig()).edge_scores
    relevance = relp(model, task, graph, RelPConfig()).edge_scores
    assert plain.abs().max() > 1e-3
    assert torch.allclose(relevance, plain, atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def ln_gelu() -> tuple[Any, ComputationalGraph]:
    model = TransformerBridge.boot_native(WITH_MLP)
    return model, ComputationalGraph.from_model(model)


def test_relp_with_every_rule_off_is_eap_and_with_rules_differs(ln_gelu: Any) -> None:
    model, graph = ln_gelu
    plain = eap(model, _task(), graph, EAPConfig()).edge_scores
    off = RelPConfig(norm_rule=False, activation_rule=False, attention_rule=False)
    assert torch.equal(relp(model, _task(), graph, off).edge_scores, plain)
    result = relp(model, _task(), graph, RelPConfig())
    assert (result.edge_scores - plain).abs().max() > 1e-3
    assert (result.n_forward, result.n_backward) == (
        eap(model, _task(), graph, EAPConfig()).n_forward,
        1,
    )
    # the AH-rule: relevance reaches heads through their values only
    into_qk = torch.tensor([name.endswith(("<q>", "<k>")) for name in graph.edges])
    assert into_qk.any() and float(result.edge_scores[into_qk].abs().max()) == 0.0
    assert float(plain[into_qk].abs().max()) > 0.0


def test_relevance_rules_keep_the_forward_values_bitwise(ln_gelu: Any) -> None:
    model, graph = ln_gelu
    engine = InterventionEngine(model, graph, _task())
    batch = next(iter(engine.batches()))
    patch = torch.rand(3, graph.n_edges, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = engine.run(batch, patch)
        ruled = engine.run(batch, patch, rules=RelevanceRules())
    assert torch.equal(plain, ruled)


def test_relp_conserves_relevance_on_a_bias_free_ln_gelu_model() -> None:
    """LRP's conservation, where it holds exactly: bias-free, every node's frozen map is
    linear, so under zero ablation (delta = -output) the scores of the edges entering a
    node sum to those of the edges leaving it, and the edges into the logits and out of the
    input each sum to minus the clean metric. The plain gradient conserves nothing here
    (a norm is scale-invariant: x . grad LN(x) = 0)."""
    model = _zeroed(TransformerBridge.boot_native(WITH_MLP), lambda p: p[-1] != "bias")
    graph, task = ComputationalGraph.from_model(model), _task()
    engine = InterventionEngine(model, graph, task, ablation="zero")
    metric = engine.clean_metric()
    config = dict(ablation="zero", metric="logit_diff")
    scores = relp(model, task, graph, RelPConfig(**config)).edge_scores.double()
    plain = eap(model, task, graph, EAPConfig(**config)).edge_scores.double()

    def flow(values: torch.Tensor, node: int) -> tuple[float, float]:
        into = values[graph.edge_target == node].sum()
        out = values[graph.edge_source == node].sum()
        return float(into), float(out)

    logits, source = graph.node_index("logits"), graph.node_index("input")
    tol = 1e-4 * abs(metric)
    assert abs(metric) > 1e-2
    assert abs(flow(scores, logits)[0] + metric) < tol
    assert abs(flow(scores, source)[1] + metric) < tol
    for node in range(graph.n_nodes):
        if node not in (logits, source):
            into, out = flow(scores, node)
            assert abs(into - out) < tol, graph.nodes[node]
    assert abs(flow(plain, logits)[0] + metric) > 0.1 * abs(metric)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=60, n_positions=32,
                        bos_token_id=0, eos_token_id=0)  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(path)
    return path


def test_relp_runs_through_the_cli_and_is_listed(gpt2_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "circuit.json"
    args = ["discover", "--model", str(gpt2_dir), "--task", "induction:seq_len=5,n=8",
            "--method", "relp", "--top-k", "12", "--param", "attention_rule=false",
            "--out", str(out), "--quiet", "--device", "cpu"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = CircuitDocument.from_json(out.read_text())
    assert doc.method.name == "relp" and 0 < len(doc.circuit_edges()) <= 12
    listed = CliRunner().invoke(app, ["methods", "--json"])
    assert listed.exit_code == 0, listed.output
    methods = {m["name"]: m for m in json.loads(listed.output)}
    options = {o["name"] for o in methods["relp"]["options"]}
    assert {"norm_rule", "activation_rule", "attention_rule", "direction"} <= options


def test_the_identity_rule_catches_composite_activation_modules(gpt2_dir: Path) -> None:
    """GPT-2's NewGELUActivation is written out of tanh: the rule is applied to the module
    as a whole (its forward hook), so RelP with that rule alone differs from EAP."""
    from circuitreg.workers.models import load_model

    model = load_model(str(gpt2_dir), "cpu").bridge
    graph, task = ComputationalGraph.from_model(model), induction_task(6, 5, 60, seed=0)
    plain = eap(model, task, graph, EAPConfig()).edge_scores
    only = RelPConfig(norm_rule=False, attention_rule=False)
    assert (relp(model, task, graph, only).edge_scores - plain).abs().max() > 1e-5
