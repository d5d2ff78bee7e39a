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
WarmStart = Literal["none", "eap_ig"]
if set(get_args(ParameterisationChoice)) != {"auto", *PARAMETERISATIONS}:  # one list of kinds
    raise ImportError("ParameterisationChoice and masks_param.PARAMETERISATIONS disagree")
DEFAULT_TEMPERATURE: dict[str, float] = {"hard_concrete": 2 / 3, "gumbel_sigmoid": 1.0}

# ``auto`` takes the score-function estimator up to this many edges, hard-concrete above: the
# score function learns edges a relaxation cannot (no gradient through discretising MLPs),
# but its noise grows with the edges (measurements: bench/results/mask_pruning_defaults.md).
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
    warm_start: WarmStart = Field(
        default="none",
        description="none (every logit init_logit) or eap_ig: logit = init_logit * "
        "(2 r - 1), r the edge's rank fraction of EAP-IG |score| (0 lowest, 1 highest)",
    )
    warm_start_steps: int = Field(
        default=5, ge=1, description="EAP-IG integration steps of the warm start"
    )
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
        faithfulness gradient is mostly zero; a fixed lambda has nothing else hurrying the
        logits, so it takes a smaller rate than the Lagrangian, which must reach its target
        within the steps. Samples: a relaxation averages several masks per step so an edge
        read through a discretising MLP gets a gradient often enough; the score function's
        noise falls with its samples. The measurements behind each default are in
        ``bench/results/mask_pruning_defaults.md``.
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
