"""Networks and the registry that the config key ``model.model_type`` selects from.

Each entry pairs a config section (a frozen dataclass, validated as ``model.<name>``) with a
builder ``(section, item_shape) -> nn.Module``. Register another network with
:func:`register_model`; it then becomes a valid ``model_type`` and its section is checked like
the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from dlpm.models.mlp import MLP, MLPConfig, build_mlp

__all__ = ["MLP", "MODELS", "ModelEntry", "build_model", "register_model"]


@dataclass(frozen=True)
class ModelEntry:
    """A registered network: its config section and its builder."""

    config: type
    build: Callable[[Any, tuple[int, ...]], nn.Module]


MODELS: dict[str, ModelEntry] = {}


def register_model(
    name: str, config: type, build: Callable[[Any, tuple[int, ...]], nn.Module]
) -> None:
    """Make ``name`` a valid ``model.model_type`` with section ``model.<name>``."""
    if name in MODELS:
        raise ValueError(f"model type '{name}' is already registered")
    MODELS[name] = ModelEntry(config=config, build=build)


def build_model(model_type: str, section: Any, item_shape: tuple[int, ...]) -> nn.Module:
    """Build the registered network ``model_type`` from its validated config section.

    Raises:
        ValueError: if ``model_type`` is not registered.
    """
    if model_type not in MODELS:
        raise ValueError(f"unknown model type '{model_type}'; available: {', '.join(MODELS)}")
    return MODELS[model_type].build(section, item_shape)


register_model("mlp", MLPConfig, build_mlp)
