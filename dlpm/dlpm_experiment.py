"""The init functions that dlpm hands to :class:`bem.Experiments.Experiment`.

:func:`dlpm_init` returns the :class:`bem.protocol.ExperimentInit` of this package: the schema
of :mod:`dlpm.config_schema`, the data of :func:`bem.datasets.get_dataset`, the method named
by the config key ``method`` (from :data:`METHODS`) and the network named by
``model.model_type`` (from :data:`dlpm.models.MODELS`).

Methods, all three built on :class:`GenerativeLevyProcess`:

- ``dlpm``: alpha-stable noise;
- ``ddpm``: ``gaussian=True``, the unit-variance Gaussian DDPM baseline with alpha forced to 2;
- ``lim``: ``LIM=True``, the Levy-Ito model of Yoon et al. (NeurIPS 2023), with the options of
  config section ``lim``.

:func:`register_method` adds further methods.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import torch
from torch import nn

from bem.config import Config
from bem.datasets import DatasetSplits, get_dataset
from bem.protocol import ExperimentInit, GenerativeMethod
from dlpm.config_schema import LimConfig, LossConfig, SamplingConfig, build_schema
from dlpm.methods.GenerativeLevyProcess import GenerativeLevyProcess
from dlpm.models import build_model

logger = logging.getLogger(__name__)

__all__ = [
    "METHODS",
    "LevyMethod",
    "LimMethod",
    "available_methods",
    "build_ddpm",
    "build_dlpm",
    "build_lim",
    "dlpm_init",
    "init_data",
    "init_method",
    "init_models",
    "lim_score_weight",
    "register_method",
]

MethodBuilder = Callable[[Config, torch.device], GenerativeMethod]


class LevyMethod:
    """:class:`bem.protocol.GenerativeMethod` over a :class:`GenerativeLevyProcess`.

    Binds the ``loss`` and ``sampling`` config sections to the process's
    ``training_losses`` and ``sample``.
    """

    def __init__(
        self, process: GenerativeLevyProcess, loss: LossConfig, sampling: SamplingConfig
    ) -> None:
        self.process = process
        self.loss_options = loss
        self.sampling = sampling

    def loss(
        self,
        models: Mapping[str, nn.Module],
        x_start: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Return the scalar DLPM loss of the batch ``x_start`` (B, *item_shape)."""
        options = self.loss_options
        out = self.process.training_losses(
            dict(models),
            x_start,
            lploss=options.lploss,
            loss_monte_carlo=options.monte_carlo,
            monte_carlo_outer=options.monte_carlo_outer,
            monte_carlo_inner=options.monte_carlo_inner,
            generator=generator,
        )
        return out["loss"]

    def sample(
        self,
        models: Mapping[str, nn.Module],
        shape: tuple[int, ...],
        *,
        generator: torch.Generator | None = None,
        history: bool = False,
        progress: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Draw samples of ``shape`` with the configured sampler (DLPM or DLIM)."""
        sampling = self.sampling
        return self.process.sample(
            dict(models),
            tuple(shape),
            reverse_steps=sampling.reverse_steps,
            deterministic=sampling.deterministic,
            dlim_eta=sampling.dlim_eta,
            clip_denoised=sampling.clip_denoised,
            get_sample_history=history,
            print_progression=progress,
            generator=generator,
        )


class LimMethod(LevyMethod):
    """:class:`bem.protocol.GenerativeMethod` over a :class:`GenerativeLevyProcess` with LIM.

    Training uses LIM's own loss (``dlpm.methods.lim.lim_training_losses``), so the ``loss``
    section does not apply; sampling reads ``reverse_steps`` and ``deterministic`` (the
    probability-flow ODE instead of the reverse SDE). The config check keeps every DLPM-only
    key at its default under ``method: lim``, so the calls of :class:`LevyMethod` serve as
    they are.
    """

    def __init__(
        self, process: GenerativeLevyProcess, loss: LossConfig, sampling: SamplingConfig
    ) -> None:
        if not process.LIM:
            raise ValueError("LimMethod needs a GenerativeLevyProcess built with LIM=True")
        super().__init__(process, loss, sampling)


def _levy_method(config: Config, device: torch.device, gaussian: bool) -> LevyMethod:
    diffusion = config.diffusion
    process = GenerativeLevyProcess(
        alpha=diffusion.alpha,
        device=device,
        reverse_steps=diffusion.reverse_steps,
        time_spacing=diffusion.time_spacing,
        rescale_timesteps=diffusion.rescale_timesteps,
        isotropic=diffusion.isotropic,
        scale=diffusion.scale,
        input_scaling=diffusion.input_scaling,
        gaussian=gaussian,
        clamp_a=diffusion.clamp_a,
        clamp_eps=diffusion.clamp_eps,
    )
    return LevyMethod(process, config.loss, config.sampling)


def build_dlpm(config: Config, device: torch.device) -> LevyMethod:
    """DLPM with alpha-stable noise of tail index ``diffusion.alpha``."""
    return _levy_method(config, device, gaussian=False)


def build_ddpm(config: Config, device: torch.device) -> LevyMethod:
    """Build the Gaussian DDPM baseline, which forces alpha to 2 and ignores ``diffusion.alpha``."""
    if config.diffusion.alpha != 2.0:
        logger.info(
            "method ddpm uses Gaussian noise; diffusion.alpha = %g is ignored",
            config.diffusion.alpha,
        )
    return _levy_method(config, device, gaussian=True)


def lim_score_weight(options: LimConfig, alpha: float) -> float:
    """Return ``k`` of the reverse LIM SDE for ``lim.score_weight``: a number, or ``alpha``."""
    return alpha if options.score_weight == "alpha" else float(options.score_weight)


def build_lim(config: Config, device: torch.device) -> LimMethod:
    """Build LIM with noise of tail index ``diffusion.alpha`` and the options of section ``lim``.

    ``diffusion.reverse_steps`` is the default number of sampling steps.
    """
    diffusion, options = config.diffusion, config.lim
    process = GenerativeLevyProcess(
        alpha=diffusion.alpha,
        device=device,
        reverse_steps=diffusion.reverse_steps,
        isotropic=diffusion.isotropic,
        LIM=True,
        clamp_a=options.clamp_a,
        clamp_eps=options.clamp_eps,
    )
    process.lim_score_weight = lim_score_weight(options, diffusion.alpha)
    return LimMethod(process, config.loss, config.sampling)


# Method name (the config key ``method`` and the flag ``--method``) to its builder. None marks
# a reserved name whose implementation is not installed; config validation rejects it.
METHODS: dict[str, MethodBuilder | None] = {
    "dlpm": build_dlpm,
    "ddpm": build_ddpm,
    "lim": build_lim,
}


def register_method(name: str, builder: MethodBuilder) -> None:
    """Make ``name`` a valid ``method``, or fill a reserved slot (a name mapped to None)."""
    if METHODS.get(name) is not None:
        raise ValueError(f"method '{name}' is already registered")
    METHODS[name] = builder


def available_methods() -> list[str]:
    """Return the names of the installed methods."""
    return [name for name, builder in METHODS.items() if builder is not None]


def init_data(config: Config, seed: int) -> DatasetSplits:
    """Build the training and reference data of section ``data``."""
    return get_dataset(config.p, seed=seed)


def init_method(config: Config, device: torch.device) -> GenerativeMethod:
    """Build the method named by ``config.method``."""
    builder = METHODS.get(config.method)
    if builder is None:
        raise NotImplementedError(
            f"method '{config.method}' is not installed;"
            f" available: {', '.join(available_methods())}"
        )
    return builder(config, device)


def init_models(
    config: Config, item_shape: tuple[int, ...], device: torch.device
) -> dict[str, nn.Module]:
    """Build ``{"default": network}`` from section ``model``, on ``device``."""
    model_type = config.model.model_type
    network = build_model(model_type, getattr(config.model, model_type), item_shape)
    return {"default": network.to(device)}


def dlpm_init() -> ExperimentInit:
    """Return the hand-over of this package to :class:`bem.Experiments.Experiment`."""
    return ExperimentInit(
        schema=build_schema,
        init_data=init_data,
        init_method=init_method,
        init_models=init_models,
    )
