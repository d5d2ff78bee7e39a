"""Options of differentiable mask pruning, and how the defaults left open are resolved.

Several defaults depend on the mask parameterisation, and the default parameterisation
depends on the graph (``auto``), so a config may leave them ``None``; ``resolve(n_edges)``
returns the config a run actually uses, with every such value filled in. A run records both:
the resolved options (``ScoreResult.params``, stored with the circuit, so rerunning with them
reproduces the run) and the options as given (``extra["requested"]``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from circuitreg.workers.methods.base import ConfigError, MethodConfig
from circuitreg.workers.methods.masks_param import PARAMETERISATIONS, Parameterisation

Objective = Literal["metric", "kl"]
SparsityControl = Literal["target", "lambda"]
ParameterisationChoice = Literal["auto", "hard_concrete", "gumbel_sigmoid", "bernoulli_score"]
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


@dataclass(frozen=True)
class MaskPruningConfig(MethodConfig):
    """Options of differentiable mask pruning (``None``: resolved by ``resolve``)."""

    method_name: ClassVar[str] = "mask_pruning"

    parameterisation: ParameterisationChoice = field(
        default="auto",
        metadata={
            "help": "hard_concrete (Edge Pruning), gumbel_sigmoid (DiscoGP, STE), "
            "bernoulli_score (exact masks, score-function gradient), or auto: "
            f"bernoulli_score up to {AUTO_SCORE_FUNCTION_MAX_EDGES} edges, else hard_concrete"
        },
    )
    sparsity_control: SparsityControl = field(
        default="target",
        metadata={"help": "target (Lagrangian towards target_sparsity) or lambda (fixed)"},
    )
    target_sparsity: float = field(
        default=0.95, metadata={"help": "fraction of edges to remove (sparsity_control=target)"}
    )
    sparsity_lambda: float = field(
        default=1.0, metadata={"help": "weight of the expected density (sparsity_control=lambda)"}
    )
    steps: int = field(default=300, metadata={"help": "optimisation steps"})
    lr: float | None = field(
        default=None,
        metadata={
            "help": "Adam learning rate of the mask logits; None: 0.2 (bernoulli_score), "
            "0.1 (target), 0.03 (lambda)"
        },
    )
    lagrangian_lr: float = field(
        default=3.0, metadata={"help": "ascent rate of the sparsity multipliers"}
    )
    temperature: float | None = field(
        default=None,
        metadata={"help": "relaxation temperature; None: 2/3 (hc), 1 (gs), none (bernoulli)"},
    )
    init_logit: float = field(default=3.0, metadata={"help": "starting logit (keep ~all)"})
    warmup: float = field(
        default=0.3, metadata={"help": "fraction of steps over which the target ramps up"}
    )
    mask_samples: int | None = field(
        default=None,
        metadata={"help": "masks sampled per step (one engine pass); None: 8, bernoulli_score 32"},
    )
    objective: Objective = field(
        default="metric", metadata={"help": "metric (keep the task metric) or kl (outputs)"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the mask noise"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.parameterisation != "auto" and self.parameterisation not in PARAMETERISATIONS:
            raise ConfigError(
                f"parameterisation {self.parameterisation!r} is not auto or one of "
                f"{PARAMETERISATIONS}"
            )
        if self.sparsity_control not in ("target", "lambda"):
            raise ConfigError(f"sparsity_control {self.sparsity_control!r} is not target or lambda")
        if not 0.0 <= self.target_sparsity < 1.0:
            raise ConfigError(f"target_sparsity must be in [0, 1), got {self.target_sparsity}")
        if not (self.sparsity_lambda >= 0 and math.isfinite(self.sparsity_lambda)):
            raise ConfigError(f"sparsity_lambda must be >= 0, got {self.sparsity_lambda}")
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.mask_samples is not None and self.mask_samples < 1:
            raise ConfigError(f"mask_samples must be >= 1, got {self.mask_samples}")
        for name in ("lr", "lagrangian_lr"):
            value = getattr(self, name)
            if value is None and name == "lr":
                continue
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name} must be a positive number, got {value}")
        if self.temperature is not None and not (
            self.temperature > 0 and math.isfinite(self.temperature)
        ):
            raise ConfigError(f"temperature must be a positive number, got {self.temperature}")
        if self.parameterisation == "bernoulli_score":
            if self.temperature is not None:
                raise ConfigError("bernoulli_score samples exact masks and takes no temperature")
            if self.mask_samples is not None and self.mask_samples < 2:
                raise ConfigError(
                    "bernoulli_score needs mask_samples >= 2 (its baseline is the mean loss "
                    f"of the other samples), got {self.mask_samples}"
                )
        if not 0.0 <= self.warmup <= 1.0:
            raise ConfigError(f"warmup must be in [0, 1], got {self.warmup}")
        if self.objective not in ("metric", "kl"):
            raise ConfigError(f"objective {self.objective!r} is not metric or kl")

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
        return dataclasses.replace(
            self, parameterisation=kind, lr=lr, mask_samples=samples, temperature=temperature
        )
