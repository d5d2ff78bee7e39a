"""Relevance patching (RelP; Rezaei Jafari et al. 2025): EAP with LRP coefficients.

EAP scores edge ``w -> r`` as ``(ablated_w - clean_w) . d metric / d input_r`` at the clean
run. RelP keeps that formula and its cost (a clean and an ablated forward, one backward per
batch of examples) but replaces the gradient by the propagation coefficients of layer-wise
relevance propagation: the backward pass runs through the engine's forward with
``RelevanceRules`` (``workers/engine/relevance.py``), whose values are the model's own and
whose derivative is LRP's. The rules, as RelP's own implementation names them:

- LN-rule: a LayerNorm/RMSNorm's scale ``sqrt(var + eps)`` is held constant. The plain
  gradient of a norm is nearly orthogonal to its input (a norm is scale-invariant), which is
  what makes attribution patching through norms noisy; held constant, the norm is linear.
- Identity-rule: an activation ``act(x)`` passes ``act(x)/x`` times the signal, so a GELU's
  steep or negative local slopes do not flip or inflate scores (the paper's largest gain,
  on MLP outputs).
- AH-rule: attention probabilities are constants; relevance flows through the values only,
  so **edges into a head's query or key score 0** (EAP and EAP-IG score them through the
  softmax gradient). ``attention_rule=False`` keeps the softmax gradient for those edges.
- Linear maps keep their gradient (LRP-0); the Half-rule for multiplicative gates has
  nothing to apply to (the engine refuses gated MLPs).

What it adds over EAP: on a network of linear maps, norms and activations under these rules
the first-order expansion is a conservative decomposition (bias-free, the relevance entering
every node equals what it passes on, and the edges into the logits sum to the metric's
change to first order), which the plain gradient is not. Where no rule has anything to
change (no norm, identity-ruled activations that are ReLUs, attention patterns that do not
depend on the input) RelP equals EAP. With every rule off it is EAP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from circuitreg.workers.engine.relevance import RelevanceRules
from circuitreg.workers.graph import ComputationalGraph
from circuitreg.workers.methods.base import ProgressFn, ScoreResult
from circuitreg.workers.methods.eap import EAPConfig, attribution_patching
from circuitreg.workers.methods.registry import register_method
from circuitreg.workers.tasks.base import TaskData

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


class RelPConfig(EAPConfig):
    """Options of RelP: EAP's, and which LRP rules replace the gradient."""

    method_name: ClassVar[str] = "relp"

    norm_rule: bool = Field(
        default=True,
        description="LN-rule: hold each LayerNorm/RMSNorm scale constant in the backward pass",
    )
    activation_rule: bool = Field(
        default=True,
        description="Identity-rule: differentiate each MLP activation act(x) as x * act(x)/x",
    )
    attention_rule: bool = Field(
        default=True,
        description="AH-rule: hold attention probabilities constant (edges into q/k score 0); "
        "false keeps the softmax gradient",
    )

    @property
    def rules(self) -> RelevanceRules:
        """The engine's rules for these options."""
        return RelevanceRules(self.norm_rule, self.activation_rule, self.attention_rule)


@register_method(
    "relp",
    config=RelPConfig,
    description="Relevance patching: EAP with LRP propagation coefficients (LN, identity, "
    "attention-head rules) in place of gradients, one backward pass",
)
def relp(
    model: TransformerBridge,
    task: TaskData,
    graph: ComputationalGraph,
    config: RelPConfig,
    progress: ProgressFn | None = None,
) -> ScoreResult:
    """Score every edge with RelP."""
    return attribution_patching(model, task, graph, config, progress, rules=config.rules)
