"""The dlpm config schema: bem's sections plus ``diffusion``, ``loss``, ``sampling``, ``lim``
and ``model``.

Layout of a config (see ``dlpm/configs/2d_data.yml``)::

    seed, method          top-level keys
    data                  bem.datasets.DataConfig
    diffusion             the noise process, shared by training and sampling
    loss                  DLPM training loss
    sampling              reverse process at evaluation time
    lim                   options of method lim only (noise clamps, reverse SDE weight)
    model                 model_type plus one section per registered network (model.mlp)
    training, optim, eval, run, logger   bem.sections

Each key is given once: ``alpha`` lives only in ``diffusion``. The noise clamps of DLPM and DDPM
are ``diffusion.clamp_a`` and ``diffusion.clamp_eps``, and those of LIM are ``lim.clamp_a`` and
``lim.clamp_eps``, because LIM has its own default clip. With ``method: lim`` every key of
:data:`DLPM_ONLY_KEYS` must keep its default, so that no option is silently ignored.
Other packages extend the schema by registering networks (:mod:`dlpm.models`) and methods
(:mod:`dlpm.dlpm_experiment`), or by adding a section to the result of :func:`build_schema`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bem.config import Config, ConfigError, ConfigSchema, option
from bem.sections import bem_sections

__all__ = [
    "DLPM_ONLY_KEYS",
    "DiffusionConfig",
    "DlpmSchema",
    "LimConfig",
    "LossConfig",
    "ModelRoot",
    "ModelSchema",
    "SamplingConfig",
    "TopConfig",
    "build_schema",
    "check_method_options",
]


def _method_names() -> list[str]:
    # Imported here because the method registry imports this module.
    from dlpm.dlpm_experiment import METHODS

    return list(METHODS)


def _model_names() -> list[str]:
    from dlpm.models import model_names

    return model_names()


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
        None, ge=2, help="number of reverse steps, at least 2 (null: the training steps)"
    )
    deterministic: bool = option(
        False, help="DLIM sampler instead of the stochastic DLPM one (deterministic at dlim_eta 0)"
    )
    dlim_eta: float = option(
        0.0, ge=0.0, le=1.0, help="noise level of the DLIM sampler (0: deterministic)"
    )
    clip_denoised: bool | float = option(
        False, gt=0.0, help="clip the predicted x_0 at each step: true for [-1, 1], c for [-c, c]"
    )


@dataclass(frozen=True)
class LimConfig:
    """Config section ``lim``: options of the Levy-Ito model, read only when ``method`` is ``lim``.

    LIM (Yoon, Park, Kim and Lim, NeurIPS 2023) takes ``diffusion.alpha``,
    ``diffusion.isotropic``, ``diffusion.reverse_steps`` (its default number of sampling steps)
    and the ``sampling`` keys ``reverse_steps`` and ``deterministic`` (probability-flow ODE instead
    of the reverse SDE) from the other sections.

    ``score_weight`` is ``k`` in the reverse SDE drift ``f - k beta S`` (``dlpm/methods/lim.py``):
    ``k = 2`` keeps the forward marginals, while the public LIM sampler uses ``k = alpha``, which
    equals 2 only at alpha 2 and widens the samples for alpha < 2. The value ``alpha`` selects
    that sampler.
    """

    clamp_eps: float | None = option(
        20.0,
        gt=0.0,
        help="clip every unit-scale stable draw (training noise, prior, reverse increments) to"
        " [-clamp_eps, clamp_eps]; 20 as in LIM (null: no clip)",
    )
    clamp_a: float | None = option(
        None, gt=0.0, help="clip the stable factor A to [0, clamp_a] (null: no clip)"
    )
    score_weight: float | Literal["alpha"] = option(
        2.0,
        gt=0.0,
        help="weight k of the fractional score in the reverse SDE drift: 2 keeps the forward"
        " marginals, 'alpha' is the weight of the public LIM sampler",
    )


@dataclass(frozen=True)
class ModelRoot:
    """Key ``model.model_type``; the network's own keys are in ``model.<model_type>``."""

    model_type: str = option("mlp", choices=_model_names, help="network architecture")


# Keys that only the DLPM chain reads (methods dlpm and ddpm), with the reason why method lim
# has no use for them. With ``method: lim`` each must keep its default. The noise clamps are
# not listed: diffusion.clamp_* and lim.clamp_* are each method's own setting, so one config
# file serves every method.
DLPM_ONLY_KEYS: dict[tuple[str, str], str] = {
    ("diffusion", "scale"): "LIM has its own cosine variance-preserving SDE",
    ("diffusion", "time_spacing"): "LIM samples on an evenly spaced continuous time grid",
    ("diffusion", "rescale_timesteps"): "the LIM network always receives continuous time",
    ("diffusion", "input_scaling"): "the LIM network receives x_t unscaled",
    ("loss", "lploss"): "LIM trains with its own smooth L1 loss",
    ("loss", "monte_carlo"): "LIM trains with the batch mean of its loss",
    ("loss", "monte_carlo_outer"): "LIM trains with the batch mean of its loss",
    ("loss", "monte_carlo_inner"): "LIM trains with the batch mean of its loss",
    ("sampling", "dlim_eta"): "LIM samples with its reverse SDE or ODE (sampling.deterministic)",
    ("sampling", "clip_denoised"): "LIM samples with its reverse SDE or ODE",
}

_SECTIONS = {"diffusion": DiffusionConfig, "loss": LossConfig, "sampling": SamplingConfig}


def check_method_options(config: Config) -> None:
    """Reject options that the selected method would ignore.

    Raises:
        ConfigError: for ``method: lim`` with a key of :data:`DLPM_ONLY_KEYS` away from its
            default; the one-line message names the key, the value and the fix.
    """
    if config.method != "lim":
        return
    for (section, name), reason in DLPM_ONLY_KEYS.items():
        default = {f.name: f.default for f in dataclasses.fields(_SECTIONS[section])}[name]
        value = getattr(getattr(config, section), name)
        if value != default or type(value) is not type(default):
            default_text = "null" if default is None else repr(default)
            raise ConfigError(
                f"config key '{section}.{name}' = {value!r} applies to methods dlpm and ddpm,"
                f" not to method lim ({reason}); set it to its default {default_text}"
            )


class DlpmSchema(ConfigSchema):
    """The dlpm schema: parses section by section, then checks keys across sections."""

    def parse(self, p: Mapping[str, Any], prefix: str = "") -> Config:
        """Validate ``p`` as :meth:`ConfigSchema.parse` does, then apply
        :func:`check_method_options`.

        Raises:
            ConfigError: on an unknown key, a wrong type, a value out of range or an option
                that the selected method does not read.
        """
        config = super().parse(p, prefix)
        check_method_options(config)
        sampling = config.sampling
        if sampling.dlim_eta > 0 and not sampling.deterministic:
            raise ConfigError(
                f"config key 'sampling.dlim_eta' = {sampling.dlim_eta!r} sets the noise of the"
                " DLIM sampler, which sampling.deterministic: true selects (--deterministic);"
                " set both, or dlim_eta to 0"
            )
        return config


class ModelSchema(ConfigSchema):
    """Schema of section ``model``, where ``model_type`` may be an alias of a registered network.

    An alias (``ddpm``) reads the section of its network (``model.unet``). The typed
    ``model_type`` is the registered name, and the resolved dict keeps the name as written.
    """

    def parse(self, p: Mapping[str, Any], prefix: str = "") -> Config:
        """Validate ``p`` as :meth:`ConfigSchema.parse` does, after resolving an alias."""
        from dlpm.models import MODEL_ALIASES

        written = p.get(self.selector) if isinstance(p, Mapping) else None
        if not isinstance(written, str) or written not in MODEL_ALIASES:
            return super().parse(p, prefix)
        config = super().parse({**p, self.selector: MODEL_ALIASES[written]}, prefix)
        config.p[self.selector] = written
        return config


def build_schema() -> ConfigSchema:
    """Return the full dlpm schema, built from the current model and method registries."""
    from dlpm.models import MODELS

    model = ModelSchema(
        root=ModelRoot,
        sections={name: entry.config for name, entry in MODELS.items()},
        selector="model_type",
    )
    sections = bem_sections()
    return DlpmSchema(
        root=TopConfig,
        sections={
            "data": sections.pop("data"),
            "diffusion": DiffusionConfig,
            "loss": LossConfig,
            "sampling": SamplingConfig,
            "lim": LimConfig,
            "model": model,
            **sections,
        },
    )
