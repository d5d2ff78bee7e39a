"""Options of differentiable mask pruning, and how the defaults left open are resolved.

Several defaults depend on the mask parameterisation, and the default parameterisation
depends on the graph (``auto``), so a config may leave them ``None``; ``resolve(n_edges)``
returns the config a run actually uses, with every such value filled in. A run records both:
the resolved options (``ScoreResult.params``, stored with the circuit, so rerunning with them
reproduces the run) and the options as given (``extra["requested"]``).
"""

from __future__ import annotations

from typing import ClassVar, Literal, get_args

from pydantic import Field

from circuitreg.workers.methods.base import ConfigError, MethodConfig
from circuitreg.workers.methods.masks_param import PARAMETERISATIONS, Parameterisation

Objective = Literal["metric", "kl"]
SparsityControl = Literal["target", "lambda"]
ParameterisationChoice = Literal["auto", "hard_concrete", "gumbel_sigmoid", "bernoulli_score"]
if set(get_args(ParameterisationChoice)) != {"auto", *PARAMETERISATIONS}:  # one list of kinds
    raise ImportError("ParameterisationChoice and masks_param.PARAMETERISATIONS disagree")
DEFAULT_TEMPERATURE: dict[str, float] = {"hard_concrete": 2 / 3, "gumbel_sigmoid": 1.0}

# ``auto`` takes the score-function estimator up to this many edges, hard-concrete above.
# The score function needs no gradient through the model, so it learns edges a relaxation
# cannot (tracr's discretising MLPs), but its noise grows with the number of edges: with 32
# samples and 300 steps (``bench/recovery.py``, zero ablation, task seeds 0-2) it reached
# ROC AUC 1.0 on every tracr program up to 116 edges and 0.998-1.0 on the induction toy (81)
# (learning rate 0.1; 0.2, the default chosen after, in ``resolve``),
# where hard-concrete got 0.81-0.96 on count_less_freq (23) and 0.946-0.999 on sort_freq (116);
# at 388 edges (shuffle_dyck) it still ranked well (0.999) but kept 372 edges, and at 1997
# (shuffle_dyck2) it fell to 0.70-0.95 where hard-concrete got 0.999-1.0. 256 lies between.
AUTO_SCORE_FUNCTION_MAX_EDGES = 256


class MaskPruningConfig(MethodConfig):
    """Options of differentiable mask pruning (``None``: resolved by ``resolve``)."""

    method_name: ClassVar[str] = "mask_pruning"

    parameterisation: ParameterisationChoice = Field(
        default="auto",
        description="hard_concrete (Edge Pruning), gumbel_sigmoid (DiscoGP, STE), "
        "bernoulli_score (exact masks, score-function gradient), or auto: "
        f"bernoulli_score up to {AUTO_SCORE_FUNCTION_MAX_EDGES} edges, else hard_concrete",
    )
    sparsity_control: SparsityControl = Field(
        default="target",
        description="target (Lagrangian towards target_sparsity) or lambda (fixed)",
    )
    target_sparsity: float = Field(
        default=0.95,
        ge=0,
        lt=1,
        description="fraction of edges to remove (sparsity_control=target)",
    )
    sparsity_lambda: float = Field(
        default=1.0,
        ge=0,
        allow_inf_nan=False,
        description="weight of the expected density (sparsity_control=lambda)",
    )
    steps: int = Field(default=300, ge=1, description="optimisation steps")
    lr: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="Adam learning rate of the mask logits; None: 0.2 (bernoulli_score), "
        "0.1 (target), 0.03 (lambda)",
    )
    lagrangian_lr: float = Field(
        default=3.0,
        gt=0,
        allow_inf_nan=False,
        description="ascent rate of the sparsity multipliers",
    )
    temperature: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="relaxation temperature; None: 2/3 (hc), 1 (gs), none (bernoulli)",
    )
    init_logit: float = Field(default=3.0, description="starting logit (keep ~all)")
    warmup: float = Field(
        default=0.3, ge=0, le=1, description="fraction of steps over which the target ramps up"
    )
    mask_samples: int | None = Field(
        default=None,
        ge=1,
        description="masks sampled per step (one engine pass); None: 8, bernoulli_score 32",
    )
    objective: Objective = Field(
        default="metric", description="metric (keep the task metric) or kl (outputs)"
    )
    seed: int = Field(default=0, description="seed of the mask noise")

    def check(self) -> None:
        super().check()
        if self.parameterisation == "bernoulli_score":
            if self.temperature is not None:
                raise ConfigError("bernoulli_score samples exact masks and takes no temperature")
            if self.mask_samples is not None and self.mask_samples < 2:
                raise ConfigError(
                    "bernoulli_score needs mask_samples >= 2 (its baseline is the mean loss "
                    f"of the other samples), got {self.mask_samples}"
                )

    def resolve(self, n_edges: int) -> MaskPruningConfig:
        """The config a run on a graph of ``n_edges`` edges uses: no ``auto``, no ``None``.

        Learning rate: Adam moves every logit by about ``lr`` per step whatever its
        gradient's size, so ``lr`` bounds how fast the sparsity term drags down an edge whose
        faithfulness gradient is mostly zero (one read through a discretising MLP pushes back
        only when a relaxed sample lands on a step). With a fixed lambda nothing else hurries
        the logits, and 0.03 (300 steps) kept such edges where 0.1 lost them (tracr
        ``reverse``'s length computation: ROC AUC 1.0 vs 0.899). The Lagrangian must reach
        its target within the steps, so it keeps 0.1. The score function sees every edge's
        effect on the loss, steps or not, but its gradient is noisy, so Adam's steps on an
        edge the loss does not need drift down slowly: with a fixed lambda (300 steps, task
        seeds 0-2) and 8 samples, 0.03 kept all 23 edges of ``count_less_freq``; with 32,
        0.1 kept the 13 true ones there but 57-61 of ``sort_freq``'s 116 (19 true); 0.3 kept
        29-35, with the induction toy's ROC AUC at 0.980-0.982 instead of 0.998-1.0; 0.2 kept
        29-33, toy 0.995-0.997.

        Samples: a relaxation averages 8 per step (with one, an edge read through a
        discretising MLP got a gradient too rarely and was lost: ROC AUC 0.69-0.83 on three
        tracr programs). The score function's noise falls with the samples; 32 (one forward,
        no backward) kept exactly the true edges of ``count_less_freq`` at seeds 0-2 and
        learning rate 0.1, 8 kept 14-17 of its 23.
        """
        kind: Parameterisation
        if self.parameterisation == "auto":
            auto_score = n_edges <= AUTO_SCORE_FUNCTION_MAX_EDGES
            kind = "bernoulli_score" if auto_score else "hard_concrete"
        else:
            kind = self.parameterisation
        score = kind == "bernoulli_score"
        if score and self.temperature is not None:
            raise ConfigError(
                f"auto chose bernoulli_score for {n_edges} edges, which takes no temperature; "
                "name a parameterisation to set one"
            )
        if self.lr is not None:
            lr = self.lr
        else:
            lr = 0.2 if score else 0.1 if self.sparsity_control == "target" else 0.03
        samples = self.mask_samples if self.mask_samples is not None else (32 if score else 8)
        if score and samples < 2:
            raise ConfigError(f"bernoulli_score needs mask_samples >= 2, got {samples}")
        temperature = None
        if not score:
            temperature = self.temperature or DEFAULT_TEMPERATURE[kind]
        return self.replaced(
            parameterisation=kind, lr=lr, mask_samples=samples, temperature=temperature
        )
