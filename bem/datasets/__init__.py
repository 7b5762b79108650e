"""Data sets behind the config section ``data``: :func:`get_dataset` and its schema.

The 2D data sets come from :class:`bem.datasets.Data.Generator`. :func:`get_dataset` returns a
:class:`DatasetSplits` of a training set and a held-out reference set for evaluation, each
either a tensor of points (2D data, served in slices by :class:`bem.data.TensorBatches`) or a
``torch.utils.data.Dataset`` (served by :class:`bem.data.LoaderBatches`).

Extension point: image data sets plug in here, by adding their names to
:func:`available_datasets`, their keys to :class:`DataConfig` and a branch to
:func:`get_dataset` that returns ``DatasetSplits(kind="image", ...)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from bem.config import option
from bem.datasets.Data import Generator

__all__ = [
    "DataConfig",
    "DatasetSplits",
    "available_datasets",
    "get_dataset",
    "is_image_dataset",
]

# Offset between the seeds of the training set and the reference set, so the two are
# independent draws of the same distribution.
_TEST_SEED_OFFSET = 1_000_003


def available_datasets() -> tuple[str, ...]:
    """Return the names accepted by ``data.dataset``."""
    return tuple(Generator.available_distributions)


def is_image_dataset(name: str) -> bool:
    """Tell whether ``name`` is an image data set (as opposed to a 2D point cloud)."""
    from bem.datasets.images import IMAGE_DATASETS

    return name in IMAGE_DATASETS


@dataclass(frozen=True)
class DataConfig:
    """Config section ``data``; the 2D keys are those of :class:`bem.datasets.Data.Generator`."""

    dataset: str = option(
        "sas", choices=available_datasets, help="data set name (Generator.available_distributions)"
    )
    nsamples: int = option(20_000, ge=1, help="number of training points (2D data)")
    test_nsamples: int = option(
        20_000, ge=1, help="number of held-out real points that evaluation compares against"
    )
    std: float | None = option(None, ge=0.0, help="scale of each component (null: default)")
    theta: float | None = option(None, gt=0.0, help="mixture spacing (null: 1)")
    n_mixture: int | None = option(None, ge=1, help="grid components, a perfect square")
    weights: tuple[float, ...] | None = option(None, ge=0.0, help="mixture weights, sum 1")
    data_alpha: float | None = option(None, gt=0.0, le=2.0, help="tail index of stable data")
    isotropic: bool = option(True, help="one stable factor A per point (stable data)")
    normalized: bool = option(False, help="standardise each coordinate of the sample")
    between_minus_1_1: bool = option(False, help="divide by max |x| so data lies in [-1, 1]")
    quantile_cutoff: float = option(
        1.0, gt=0.0, le=1.0, help="keep the points under this norm quantile (1: keep all)"
    )


@dataclass(frozen=True)
class DatasetSplits:
    """A training set and a held-out reference set of the same distribution.

    Attributes:
        train: tensor of shape (n, *item_shape) or a Dataset yielding items or (item, label).
        test: reference set for evaluation, same form as ``train``.
        kind: ``"2d"`` for point clouds, ``"image"`` for images.
        item_shape: shape of one item, (2,) for 2D points or (C, H, W).
    """

    train: torch.Tensor | Dataset
    test: torch.Tensor | Dataset
    kind: str
    item_shape: tuple[int, ...]


def make_generator(data: Mapping[str, Any]) -> Generator:
    """Build the 2D :class:`Generator` described by the section ``data`` of a resolved config.

    Raises:
        ValueError: if the generator rejects a value (a non-square ``n_mixture``, for instance).
    """
    keys = (
        "std",
        "theta",
        "n_mixture",
        "weights",
        "data_alpha",
        "isotropic",
        "normalized",
        "between_minus_1_1",
        "quantile_cutoff",
    )
    params = {key: data[key] for key in keys if data.get(key) is not None}
    return Generator(data["dataset"], nsamples=data["nsamples"], **params)


def get_dataset(p: Mapping[str, Any], *, seed: int | None = None) -> DatasetSplits:
    """Build the data set named in ``p["data"]["dataset"]`` (a resolved config dict).

    Args:
        p: resolved config; reads the section ``data``.
        seed: seed of the draws; defaults to ``p["seed"]``, or 0 when that is null.

    Returns:
        the training and reference sets, as tensors on the CPU for 2D data.

    Raises:
        NotImplementedError: for an image data set, which this function does not load yet.
    """
    data = p["data"]
    name = data["dataset"]
    if seed is None:
        seed = p.get("seed") or 0
    if is_image_dataset(name):
        raise NotImplementedError(
            f"image data set '{name}' is not available through get_dataset yet; use a 2D data"
            f" set: {', '.join(available_datasets())}"
        )
    generator = make_generator(data)
    train = generator.generate((data["nsamples"], 2), generator=torch.Generator().manual_seed(seed))
    test_generator = torch.Generator().manual_seed(seed + _TEST_SEED_OFFSET)
    test = generator.generate((data["test_nsamples"], 2), generator=test_generator)
    return DatasetSplits(train=train, test=test, kind="2d", item_shape=(2,))
