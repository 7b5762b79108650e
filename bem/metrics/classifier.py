"""A small CNN classifier trained on the data set itself, for offline image metrics.

Its penultimate layer gives a feature space for FID and k-NN metrics that needs no downloaded
network (works offline for digits and MNIST), and its predictions give the class proportions
of generated samples. The trained weights are cached under ``<data root>/classifiers/``.
"""

import logging
import os
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from bem.datasets.images import resolve_data_dir

logger = logging.getLogger(__name__)

# Bumped when the architecture or the cache contents change, so stale files are retrained.
CACHE_VERSION = 1


class SmallCNN(nn.Module):
    """Two convolution stages and a two-layer head; input images in [-1, 1].

    Layout: conv3x3 to ``width`` channels, ReLU, 2x2 max-pool, two [conv3x3, ReLU] with
    ``2 * width`` channels, 2x2 max-pool, adaptive average pooling to 2x2, a linear layer to
    ``feature_dim`` with ReLU (the features), and a linear layer to the logits. Any
    input size of at least 4 pixels works.

    Args:
        in_channels: image channels.
        num_classes: number of classes.
        width: channels of the first stage.
        feature_dim: size of the feature vector.
    """

    def __init__(
        self, in_channels: int, num_classes: int, width: int = 16, feature_dim: int = 128
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.width = width
        self.feature_dim = feature_dim
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * width, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return logits (B, num_classes) and features (B, feature_dim) of images (B, C, H, W)."""
        features = self.body(x)
        return self.head(features), features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits (B, num_classes) of images (B, C, H, W)."""
        return self.logits_and_features(x)[0]


def _labels_of(dataset: Dataset) -> torch.Tensor:
    labels = getattr(dataset, "labels", None)
    if isinstance(labels, torch.Tensor):
        return labels.long()
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])


@torch.no_grad()
def accuracy(model: SmallCNN, dataset: Dataset, batch_size: int = 512) -> float:
    """Return the fraction of ``dataset`` that ``model`` classifies correctly."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for images, labels in DataLoader(dataset, batch_size=batch_size):
        correct += int((model(images.to(device)).argmax(1).cpu() == labels).sum())
    model.train(was_training)
    return correct / max(len(dataset), 1)


def train_classifier(
    dataset: Dataset,
    *,
    num_classes: int | None = None,
    steps: int = 1000,
    batch_size: int = 64,
    lr: float = 2e-3,
    holdout_fraction: float = 0.1,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[SmallCNN, float]:
    """Train a :class:`SmallCNN` with Adam and cross-entropy.

    A seeded fraction ``holdout_fraction`` of the data is held out to measure the accuracy;
    the rest is used for ``steps`` optimisation steps of ``batch_size`` images.

    Args:
        dataset: yields (image (C, H, W) in [-1, 1], label int).
        num_classes: number of classes; None takes ``max(label) + 1``.

    Returns:
        the model in eval mode and its accuracy on the held-out part.
    """
    if len(dataset) < 2:
        raise ValueError(f"dataset has {len(dataset)} images; the classifier needs at least 2")
    if not 0.0 <= holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction must lie in [0, 1), got {holdout_fraction}")
    labels = _labels_of(dataset)
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    in_channels = dataset[0][0].shape[0]

    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=generator).tolist()
    n_holdout = int(holdout_fraction * len(dataset))
    holdout, train = Subset(dataset, order[:n_holdout]), Subset(dataset, order[n_holdout:])

    torch.manual_seed(seed)
    model = SmallCNN(in_channels, num_classes).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator)
    model.train()
    step = 0
    while step < steps:
        for images, targets in loader:
            loss = F.cross_entropy(model(images.to(device)), targets.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            if step == steps:
                break

    model.eval()
    holdout_accuracy = accuracy(model, holdout) if n_holdout > 0 else float("nan")
    logger.info(
        "trained classifier on %d images (%d classes, %d steps): held-out accuracy %.4f",
        len(train),
        num_classes,
        steps,
        holdout_accuracy,
    )
    return model, holdout_accuracy


def classifier_cache_path(
    name: str, dataset: Dataset, data_dir: str | os.PathLike | None = None
) -> Path:
    """Return ``<data root>/classifiers/<name>_<C>x<H>x<W>_n<N>.pt`` for ``dataset``.

    The data root is ``resolve_data_dir(data_dir)``.
    """
    channels, height, width = dataset[0][0].shape
    filename = f"{name}_{channels}x{height}x{width}_n{len(dataset)}.pt"
    return resolve_data_dir(data_dir) / "classifiers" / filename


def load_or_train_classifier(
    name: str,
    dataset: Dataset,
    data_dir: str | os.PathLike | None = None,
    *,
    steps: int = 1000,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> SmallCNN:
    """Load the cached classifier of ``dataset``, or train and cache one.

    The cache file is keyed by ``name``, the image shape and the data set size
    (:func:`classifier_cache_path`), written atomically (temporary file, then rename) and read
    with ``torch.load(weights_only=True)``.

    Args:
        name: data set name, used in the file name.
        dataset: yields (image (C, H, W) in [-1, 1], label int); pass it without random flips.
        data_dir: data root (see ``resolve_data_dir``); the cache goes to its ``classifiers/``
            subfolder.
        steps, seed: training options of :func:`train_classifier`.

    Returns:
        the classifier, in eval mode on ``device``.
    """
    path = classifier_cache_path(name, dataset, data_dir)
    if path.is_file():
        state = torch.load(path, map_location=device, weights_only=True)
        if state.get("version") == CACHE_VERSION:
            model = SmallCNN(
                state["in_channels"], state["num_classes"], state["width"], state["feature_dim"]
            )
            model.load_state_dict(state["state_dict"])
            logger.info(
                "loaded classifier %s (held-out accuracy %.4f)", path, state["holdout_accuracy"]
            )
            return model.to(device).eval()
        logger.info("classifier cache %s has an old format; retraining", path)

    model, holdout_accuracy = train_classifier(dataset, steps=steps, seed=seed, device=device)
    state = {
        "version": CACHE_VERSION,
        "in_channels": model.in_channels,
        "num_classes": model.num_classes,
        "width": model.width,
        "feature_dim": model.feature_dim,
        "holdout_accuracy": holdout_accuracy,
        "state_dict": {key: value.cpu() for key, value in model.state_dict().items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            torch.save(state, handle)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    logger.info("saved classifier to %s", path)
    return model
