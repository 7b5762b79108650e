"""Data sets behind the config section ``data``: :func:`get_dataset` and its schema.

The 2D data sets come from :class:`bem.datasets.Data.Generator`, the image data sets from
:mod:`bem.datasets.images` (through :mod:`bem.datasets.image_data`). :func:`get_dataset` returns
a :class:`DatasetSplits` of a training set and a held-out reference set for evaluation, each
either a tensor of points (2D data, served in slices by :class:`bem.data.TensorBatches`) or a
``torch.utils.data.Dataset`` of ``(image, label)`` pairs (served by
:class:`bem.data.LoaderBatches`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
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


# Keys of section ``data`` that only image data sets read, and those that only 2D data reads.
IMAGE_KEYS = (
    "image_size",
    "channels",
    "random_flip",
    "num_workers",
    "imbalance_factor",
    "data_dir",
    "download",
)
POINT_KEYS = ("std", "theta", "n_mixture", "weights", "data_alpha")


def available_datasets() -> tuple[str, ...]:
    """Return the names accepted by ``data.dataset``: the 2D generators, then the image sets."""
    from bem.datasets.images import IMAGE_DATASETS

    return tuple(Generator.available_distributions) + tuple(IMAGE_DATASETS)


def is_image_dataset(name: str) -> bool:
    """Tell whether ``name`` is an image data set (as opposed to a 2D point cloud)."""
    from bem.datasets.images import IMAGE_DATASETS

    return name in IMAGE_DATASETS


@dataclass(frozen=True)
class DataConfig:
    """Config section ``data``; the 2D keys are those of :class:`bem.datasets.Data.Generator`."""

    dataset: str = option(
        "sas",
        choices=available_datasets,
        help="data set name: a 2D generator (Generator.available_distributions) or an image set",
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
    image_size: int | None = option(
        None, ge=1, help="square image size in pixels (null: the data set's native size)"
    )
    channels: int | None = option(
        None, ge=1, help="image channels, checked against the data set (null: the data set's)"
    )
    random_flip: bool = option(False, help="flip training images left-right with probability 1/2")
    num_workers: int = option(0, ge=0, help="DataLoader worker processes for image data")
    imbalance_factor: float | None = option(
        None, ge=1.0, help="cifar10_lt: largest over smallest class size (null: 100)"
    )
    data_dir: str | None = option(
        None, help="root of the image files (null: $DLPM_DATA, else ./data)"
    )
    download: bool = option(False, help="download missing MNIST, CIFAR-10 or CelebA files")

    def __post_init__(self) -> None:
        if is_image_dataset(self.dataset):
            _check_image_keys(self)
            return
        defaults = {field.name: field.default for field in dataclasses.fields(self)}
        for key in IMAGE_KEYS:
            default = defaults[key]
            if getattr(self, key) != default:
                raise ValueError(
                    f"'{key}' = {getattr(self, key)!r} applies to image data sets only, not to"
                    f" '{self.dataset}'; remove it or set it to {_yaml_value(default)}"
                )


def _yaml_value(value: Any) -> str:
    """Write a default the way YAML spells it: null, true, false or the Python literal."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


def _check_image_keys(data: DataConfig) -> None:
    from bem.datasets.images import dataset_channels

    for key in POINT_KEYS:
        if getattr(data, key) is not None:
            raise ValueError(
                f"'{key}' = {getattr(data, key)!r} applies to 2D data only, not to image data set"
                f" '{data.dataset}'; remove it"
            )
    expected = dataset_channels(data.dataset)
    if data.channels is not None and data.channels != expected:
        raise ValueError(
            f"'channels' = {data.channels} but '{data.dataset}' has {expected} channel(s);"
            f" set channels to {expected} or null"
        )
    if data.imbalance_factor is not None and data.dataset != "cifar10_lt":
        raise ValueError(
            f"'imbalance_factor' = {data.imbalance_factor!r} applies to cifar10_lt only, not to"
            f" '{data.dataset}'; set it to null"
        )


@dataclass(frozen=True)
class DatasetSplits:
    """A training set and a held-out reference set of the same distribution.

    Attributes:
        train: tensor of shape (n, *item_shape) or a Dataset yielding items or (item, label).
        test: reference set for evaluation, same form as ``train``.
        kind: ``"2d"`` for point clouds, ``"image"`` for images.
        item_shape: shape of one item, (2,) for 2D points or (C, H, W).
        num_workers: DataLoader worker processes for a Dataset ``train``.
        metrics: ``(real, generated) -> {name: value}`` bound to this data set (for images:
            the classifier and the training class proportions); None uses the function
            registered for ``kind`` in :mod:`bem.evaluation`.
    """

    train: torch.Tensor | Dataset
    test: torch.Tensor | Dataset
    kind: str
    item_shape: tuple[int, ...]
    num_workers: int = 0
    metrics: Callable[[torch.Tensor, torch.Tensor], dict[str, float]] | None = None


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
        the training and reference sets: tensors on the CPU for 2D data, Datasets of
        ``(image (C, H, W) in [-1, 1], label)`` for image data
        (:func:`bem.datasets.image_data.image_splits`).

    Raises:
        bem.datasets.images.DatasetFilesMissingError: the files of an image data set are not
            under the data root and ``download`` is false.
    """
    data = p["data"]
    name = data["dataset"]
    if seed is None:
        seed = p.get("seed") or 0
    if is_image_dataset(name):
        from bem.datasets.image_data import image_splits

        return image_splits(data)
    generator = make_generator(data)
    train = generator.generate((data["nsamples"], 2), generator=torch.Generator().manual_seed(seed))
    test_generator = torch.Generator().manual_seed(seed + _TEST_SEED_OFFSET)
    test = generator.generate((data["test_nsamples"], 2), generator=test_generator)
    return DatasetSplits(train=train, test=test, kind="2d", item_shape=(2,))
