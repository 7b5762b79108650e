"""The hand-over from a method package to :class:`bem.Experiments.Experiment`.

bem never imports a method package. Instead, the package builds an :class:`ExperimentInit`:
its config schema and the functions that build the data, the method and the models from a
validated :class:`bem.config.Config`. The method it returns follows :class:`GenerativeMethod`,
two calls with the options of the config already bound.

Example (a method package)::

    init = ExperimentInit(
        schema=build_schema,                    # () -> ConfigSchema
        init_data=lambda config, seed: get_dataset(config.p, seed=seed),
        init_method=build_method,               # (config, device) -> GenerativeMethod
        init_models=build_models,               # (config, item_shape, device) -> {name: module}
    )
    Experiment("models/run1", p, init=init).prepare()
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from bem.config import Config, ConfigSchema
from bem.datasets import DatasetSplits
from bem.optim import make_optimizers

__all__ = ["ExperimentInit", "GenerativeMethod", "default_init_optimizers"]


@runtime_checkable
class GenerativeMethod(Protocol):
    """A trainable generative method with its config options bound."""

    def loss(
        self,
        models: Mapping[str, nn.Module],
        x_start: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Return the scalar training loss of the batch ``x_start`` (B, *item_shape).

        ``generator`` drives all the randomness of the loss (noise, timesteps).
        """
        ...

    def sample(
        self,
        models: Mapping[str, nn.Module],
        shape: tuple[int, ...],
        *,
        generator: torch.Generator | None = None,
        history: bool = False,
        progress: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Draw samples of ``shape`` = (N, *item_shape).

        Returns:
            the samples, or ``(samples, history)`` with ``history`` of shape
            (steps + 1, N, *item_shape) when ``history`` is true.
        """
        ...


Schedules = dict[str, LRScheduler | None]


def default_init_optimizers(
    config: Config, models: Mapping[str, nn.Module]
) -> tuple[dict[str, Optimizer], Schedules]:
    """Build AdamW and the learning-rate schedule of ``config.optim`` for every model."""
    return make_optimizers(config.optim, models)


@dataclass(frozen=True)
class ExperimentInit:
    """The hand-over from a method package to :class:`bem.Experiments.Experiment`.

    Attributes:
        schema: returns the full config schema (bem's sections from
            :func:`bem.sections.bem_sections` plus the package's own).
        init_data: ``(config, seed) -> DatasetSplits``: training and reference data.
        init_method: ``(config, device) -> GenerativeMethod``.
        init_models: ``(config, item_shape, device) -> {name: module}``; the name
            ``"default"`` is the main network.
        init_optimizers: ``(config, models) -> (optimizers, schedules)`` keyed like
            ``models``; defaults to AdamW and the schedule of section ``optim``.
    """

    schema: Callable[[], ConfigSchema]
    init_data: Callable[[Config, int], DatasetSplits]
    init_method: Callable[[Config, torch.device], GenerativeMethod]
    init_models: Callable[[Config, tuple[int, ...], torch.device], dict[str, nn.Module]]
    init_optimizers: Callable[
        [Config, Mapping[str, nn.Module]], tuple[dict[str, Optimizer], Schedules]
    ] = default_init_optimizers
