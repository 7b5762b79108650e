"""The dlpm config schema: bem's sections plus ``diffusion``, ``loss``, ``sampling`` and ``model``.

Layout of a config (see ``dlpm/configs/2d_data.yml``)::

    seed, method          top-level keys
    data                  bem.datasets.DataConfig
    diffusion             the noise process, shared by training and sampling
    loss                  DLPM training loss
    sampling              reverse process at evaluation time
    model                 model_type plus one section per registered network (model.mlp)
    training, optim, eval, run, logger   bem.sections

Each key is given once: ``alpha`` and the noise clamps live only in ``diffusion``.
Other packages extend the schema by registering networks (:mod:`dlpm.models`) and methods
(:mod:`dlpm.dlpm_experiment`), or by adding a section to the result of :func:`build_schema`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bem.config import ConfigSchema, option
from bem.sections import bem_sections

__all__ = [
    "DiffusionConfig",
    "LossConfig",
    "ModelRoot",
    "SamplingConfig",
    "TopConfig",
    "build_schema",
]


def _method_names() -> list[str]:
    # Imported here because the method registry imports this module.
    from dlpm.dlpm_experiment import METHODS

    return list(METHODS)


def _model_names() -> list[str]:
    from dlpm.models import MODELS

    return list(MODELS)


@dataclass(frozen=True)
class TopConfig:
    """Top-level keys."""

    seed: int | None = option(0, ge=0, help="seed of every random stream (null: random)")
    method: str = option("dlpm", choices=_method_names, help="generative method")

    def __post_init__(self) -> None:
        from dlpm.dlpm_experiment import METHODS, available_methods

        if METHODS.get(self.method) is None:
            raise ValueError(
                f"method '{self.method}' is reserved but not installed in this version;"
                f" available: {', '.join(available_methods())}"
            )


@dataclass(frozen=True)
class DiffusionConfig:
    """Config section ``diffusion``: the forward process, shared by training and sampling."""

    alpha: float = option(1.7, gt=0.0, le=2.0, help="tail index of the alpha-stable noise")
    reverse_steps: int = option(100, ge=2, help="number of diffusion steps T used in training")
    isotropic: bool = option(True, help="one stable factor A per example (else per coordinate)")
    clamp_a: float | None = option(None, gt=0.0, help="clip A to [0, clamp_a] (null: no clip)")
    clamp_eps: float | None = option(
        None, gt=0.0, help="clip the noise to [-clamp_eps, clamp_eps] (null: no clip)"
    )
    scale: Literal["scale_preserving", "scale_exploding"] = option(
        "scale_preserving", help="variance-preserving cosine schedule or EDM-style exploding"
    )
    time_spacing: Literal["linear", "quadratic"] = option("linear", help="spacing of the steps")
    rescale_timesteps: bool = option(True, help="feed t/T in [0, 1) to the network")
    input_scaling: bool = option(False, help="divide the network input by 1 + sigma_bar_t")


@dataclass(frozen=True)
class LossConfig:
    """Config section ``loss``: the DLPM denoising loss."""

    lploss: float = option(
        2.0, help="p of the Lp loss: 2 root mean square, 1 smooth L1, -1 mean square"
    )
    monte_carlo: Literal["mean", "median"] = option(
        "mean", help="batch mean, or median of means over draws of A"
    )
    monte_carlo_outer: int = option(4, ge=1, help="median of means: draws of A")
    monte_carlo_inner: int = option(1, ge=1, help="median of means: draws of z per A")

    def __post_init__(self) -> None:
        if not (self.lploss == -1 or self.lploss > 0):
            raise ValueError(
                f"'lploss' = {self.lploss!r} is invalid; accepted: -1 (mean square) or p > 0"
            )


@dataclass(frozen=True)
class SamplingConfig:
    """Config section ``sampling``: the reverse process used to generate samples."""

    reverse_steps: int | None = option(
        None, ge=1, help="number of reverse steps (null: the training steps)"
    )
    deterministic: bool = option(False, help="DLIM sampler instead of the stochastic DLPM one")
    dlim_eta: float = option(0.0, ge=0.0, le=1.0, help="DLIM noise level (0: deterministic)")
    clip_denoised: bool | float = option(
        False, gt=0.0, help="clip the predicted x_0 at each step: true for [-1, 1], c for [-c, c]"
    )


@dataclass(frozen=True)
class ModelRoot:
    """Key ``model.model_type``; the network's own keys are in ``model.<model_type>``."""

    model_type: str = option("mlp", choices=_model_names, help="network architecture")


def build_schema() -> ConfigSchema:
    """Return the full dlpm schema, built from the current model and method registries."""
    from dlpm.models import MODELS

    model = ConfigSchema(
        root=ModelRoot,
        sections={name: entry.config for name, entry in MODELS.items()},
        selector="model_type",
    )
    sections = bem_sections()
    return ConfigSchema(
        root=TopConfig,
        sections={
            "data": sections.pop("data"),
            "diffusion": DiffusionConfig,
            "loss": LossConfig,
            "sampling": SamplingConfig,
            "model": model,
            **sections,
        },
    )
