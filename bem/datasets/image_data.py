"""Image data for experiments: the splits of section ``data`` and the metrics bound to them.

:func:`image_splits` builds the training set (random flips as configured), the reference set
for evaluation (the test split, never flipped) and an :class:`ImageMetrics` scorer. The scorer
compares generated images with the reference set in the feature space of the project's small
classifier (trained on the training split without flips, cached under the data root) and in
Inception space when its weights are on disk. It also compares the class proportions of the
generated images with those of the training set.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from bem.datasets import DatasetSplits
from bem.datasets.images import get_image_dataset, resolve_data_dir

logger = logging.getLogger(__name__)

__all__ = ["ImageMetrics", "class_proportions", "image_splits"]

# The long-tailed subset of cifar10_lt is drawn with this fixed seed, so that every run (and
# the cached classifier) gets the same training images whatever the run seed.
LONG_TAIL_SEED = 0
DEFAULT_IMBALANCE_FACTOR = 100.0


def class_proportions(dataset: Dataset) -> torch.Tensor:
    """Return the class proportions (K,) of a data set of ``(image, label)`` pairs.

    Reads the ``labels`` tensor of in-memory sets, else every item's label.
    """
    labels = getattr(dataset, "labels", None)
    if isinstance(labels, torch.Tensor):
        labels = labels.long()
    else:
        labels = torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])
    counts = torch.bincount(labels).double()
    return counts / counts.sum()


class ImageMetrics:
    """Score generated images of one data set: :func:`bem.metrics.images.evaluate_images`.

    The classifier is loaded (or trained and cached) on the first call, so that runs that
    never evaluate do not pay for it.

    Args:
        name: data set name, used in the classifier's cache file name.
        classifier_data: training split without random flips, the classifier's training set.
        data_dir: data root holding the ``classifiers/`` cache (see ``resolve_data_dir``).
        train_class_proportions: class proportions of the training set, (K,).
    """

    def __init__(
        self,
        name: str,
        classifier_data: Dataset,
        data_dir: str | Path | None,
        train_class_proportions: torch.Tensor,
    ) -> None:
        self.name = name
        self.classifier_data = classifier_data
        self.data_dir = data_dir
        self.train_class_proportions = train_class_proportions
        self._classifier: torch.nn.Module | None = None

    def classifier(self) -> torch.nn.Module:
        """Return the data set's classifier, loading or training it on first use."""
        if self._classifier is None:
            from bem.metrics.classifier import load_or_train_classifier

            self._classifier = load_or_train_classifier(
                self.name, self.classifier_data, self.data_dir
            )
        return self._classifier

    def __call__(self, real: torch.Tensor, generated: torch.Tensor) -> dict[str, float]:
        """Compute the image metrics of ``generated`` (M, C, H, W) against ``real`` (N, C, H, W).

        Returns:
            the keys of :func:`bem.metrics.images.evaluate_images` (``classifier_fid``,
            ``class_tv``, ``class_ratio_<c>``, ...).
        """
        from bem.metrics.images import evaluate_images

        return evaluate_images(
            real,
            generated,
            classifier=self.classifier(),
            train_class_proportions=self.train_class_proportions,
        )


def image_splits(data: Mapping[str, Any]) -> DatasetSplits:
    """Build the image splits described by the resolved section ``data``.

    The training split has the configured random flips. The reference split is the test split,
    without flips. ``digits`` has no test split: its reference set is the training set itself,
    so its metrics measure the fit to the training images rather than generalisation.

    Args:
        data: resolved section ``data`` (``dataset``, ``image_size``, ``random_flip``,
            ``imbalance_factor``, ``data_dir``, ``download``, ``num_workers``).

    Returns:
        splits of kind ``"image"`` with ``item_shape`` (C, H, W) and an :class:`ImageMetrics`.

    Raises:
        bem.datasets.images.DatasetFilesMissingError: the files are missing and ``download``
            is false; nothing is written then.
    """
    name = data["dataset"]
    factor = data.get("imbalance_factor")
    common = {
        "data_dir": data.get("data_dir"),
        "image_size": data.get("image_size"),
        "download": bool(data.get("download", False)),
        "imbalance_factor": DEFAULT_IMBALANCE_FACTOR if factor is None else float(factor),
        "seed": LONG_TAIL_SEED,
    }
    train = get_image_dataset(name, train=True, random_flip=bool(data.get("random_flip")), **common)
    if data.get("random_flip"):
        unflipped = get_image_dataset(name, train=True, random_flip=False, **common)
    else:
        unflipped = train
    test = get_image_dataset(name, train=False, random_flip=False, **common)

    item_shape = tuple(int(n) for n in train[0][0].shape)
    proportions = class_proportions(unflipped)
    logger.info(
        "%s: %d training images, %d reference images, item shape %s",
        name,
        len(train),
        len(test),
        item_shape,
    )
    if name == "cifar10_lt":
        counts = (proportions * len(unflipped)).round().long().tolist()
        logger.info("cifar10_lt class counts: %s", counts)
    metrics: ImageMetrics | None = None
    if proportions.numel() >= 2:
        metrics = ImageMetrics(name, unflipped, resolve_data_dir(data.get("data_dir")), proportions)
    else:
        # A classifier of one class predicts that class for every image: its features and
        # class proportions cannot tell samples apart.
        logger.warning(
            "%s has a single class: no classifier-space metrics; evaluation keeps the"
            " Inception metrics, when their weights are on disk",
            name,
        )
    return DatasetSplits(
        train=train,
        test=test,
        kind="image",
        item_shape=item_shape,
        num_workers=int(data.get("num_workers", 0)),
        metrics=metrics,
    )
