"""Networks and the registry that the config key ``model.model_type`` selects from.

Each entry pairs a config section (a frozen dataclass, validated as ``model.<name>``) with a
builder ``(section, item_shape) -> nn.Module``. Register another network with
:func:`register_model`; it then becomes a valid ``model_type`` and its section is checked like
the others. An alias (:func:`register_alias`) is another ``model_type`` for a registered network
and reads that network's section: ``model_type: ddpm``, the name of the original configs,
selects the UNet with its keys in ``model.unet``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from dlpm.models.mlp import MLP, MLPConfig, build_mlp
from dlpm.models.unet import UNetConfig, UNetModel, build_unet

__all__ = [
    "MLP",
    "MODELS",
    "MODEL_ALIASES",
    "ModelEntry",
    "UNetModel",
    "build_model",
    "model_names",
    "register_alias",
    "register_model",
]


@dataclass(frozen=True)
class ModelEntry:
    """A registered network: its config section and its builder."""

    config: type
    build: Callable[[Any, tuple[int, ...]], nn.Module]


MODELS: dict[str, ModelEntry] = {}
# Alias (an accepted ``model_type``) to the registered name whose section and builder it uses.
MODEL_ALIASES: dict[str, str] = {}


def register_model(
    name: str, config: type, build: Callable[[Any, tuple[int, ...]], nn.Module]
) -> None:
    """Make ``name`` a valid ``model.model_type`` with section ``model.<name>``."""
    if name in MODELS or name in MODEL_ALIASES:
        raise ValueError(f"model type '{name}' is already registered")
    MODELS[name] = ModelEntry(config=config, build=build)


def register_alias(alias: str, name: str) -> None:
    """Make ``alias`` a valid ``model.model_type`` that selects the registered model ``name``."""
    if alias in MODELS or alias in MODEL_ALIASES:
        raise ValueError(f"model type '{alias}' is already registered")
    if name not in MODELS:
        raise ValueError(f"cannot alias '{alias}' to unregistered model type '{name}'")
    MODEL_ALIASES[alias] = name


def model_names() -> list[str]:
    """Return every accepted ``model.model_type``: registered names, then aliases."""
    return list(MODELS) + list(MODEL_ALIASES)


def build_model(model_type: str, section: Any, item_shape: tuple[int, ...]) -> nn.Module:
    """Build the registered network ``model_type`` from its validated config section.

    Raises:
        ValueError: if ``model_type`` is not registered.
    """
    name = MODEL_ALIASES.get(model_type, model_type)
    if name not in MODELS:
        raise ValueError(
            f"unknown model type '{model_type}'; available: {', '.join(model_names())}"
        )
    return MODELS[name].build(section, item_shape)


register_model("mlp", MLPConfig, build_mlp)
register_model("unet", UNetConfig, build_unet)
register_alias("ddpm", "unet")
