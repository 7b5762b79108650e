"""Image metrics: FID, k-NN precision, recall, density and coverage, and class proportions.

Features come from two networks:

- Inception-v3 (the FID network of Heusel et al. 2017, as packaged by torch-fidelity and
  torchmetrics), 2048-d pool features. Its weights are read from a local file only:
  :func:`find_inception_weights` looks at the argument, then ``$DLPM_INCEPTION_WEIGHTS``, then
  the file that torch-fidelity would have downloaded into torch.hub's cache. When none exists,
  the Inception metrics are left out with one log line, and nothing is downloaded.
- the project's small classifier (:mod:`bem.metrics.classifier`), penultimate-layer features,
  which work offline. Its predictions also give the class proportions of generated images.

All images are tensors (N, C, H, W) in the model range [-1, 1].
"""

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bem.datasets.images import from_model_range
from bem.metrics.two_d import density_coverage, precision_recall, subsample

logger = logging.getLogger(__name__)

INCEPTION_WEIGHTS_ENV = "DLPM_INCEPTION_WEIGHTS"

# Name under which torch-fidelity 0.4 (URL_INCEPTION_V3 in feature_extractor_inceptionv3.py)
# stores the FID Inception weights in torch.hub's checkpoint folder after a download.
INCEPTION_CACHE_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
_INCEPTION_SKIP_LOGGED = False


def find_inception_weights(inception_weights: str | os.PathLike | None = None) -> Path | None:
    """Locate the FID Inception-v3 weights without downloading them.

    Args:
        inception_weights: path to the weights (torch-fidelity's ``.pth`` state dict).

    Returns:
        ``inception_weights`` if given, else ``$DLPM_INCEPTION_WEIGHTS`` if set, else torch.hub's
        cached download if present, else None.

    Raises:
        FileNotFoundError: the argument or the environment variable names a missing file.
    """
    for source, value in (
        ("inception_weights", inception_weights),
        (INCEPTION_WEIGHTS_ENV, os.environ.get(INCEPTION_WEIGHTS_ENV)),
    ):
        if value:
            path = Path(value)
            if not path.is_file():
                raise FileNotFoundError(f"{source} points to {path}, which is not a file")
            return path
    cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_CACHE_FILENAME
    return cached if cached.is_file() else None


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Map images in [-1, 1] to uint8 in [0, 255], rounding to the nearest level."""
    return (from_model_range(images) * 255.0).round().to(torch.uint8)


@torch.no_grad()
def inception_features(
    images: torch.Tensor, weights_path: str | os.PathLike, *, batch_size: int = 50
) -> torch.Tensor:
    """Compute the 2048-d Inception-v3 pool features used by FID.

    Uses torchmetrics' ``NoTrainInceptionV3`` (torch-fidelity's port of the TensorFlow FID
    network), which resizes uint8 images to 299x299. Grayscale images are repeated to 3 channels.

    Args:
        images: (N, C, H, W) in [-1, 1], C in {1, 3}.
        weights_path: local weights file (see :func:`find_inception_weights`).

    Returns:
        float64 tensor (N, 2048).
    """
    from torchmetrics.image.fid import NoTrainInceptionV3

    network = NoTrainInceptionV3(
        name="inception-v3-compat",
        features_list=["2048"],
        feature_extractor_weights_path=str(weights_path),
    )
    features = []
    for start in range(0, images.shape[0], batch_size):
        batch = to_uint8(images[start : start + batch_size])
        if batch.shape[1] == 1:
            batch = batch.repeat(1, 3, 1, 1)
        features.append(network(batch).double())
    return torch.cat(features)


@torch.no_grad()
def classifier_outputs(
    classifier: nn.Module, images: torch.Tensor, *, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run a classifier that has ``logits_and_features(x) -> (logits, features)``.

    Returns:
        logits (N, num_classes) and float64 features (N, feature_dim), on the CPU.
    """
    was_training = classifier.training
    classifier.eval()
    device = next(classifier.parameters()).device
    logits, features = [], []
    for start in range(0, images.shape[0], batch_size):
        batch_logits, batch_features = classifier.logits_and_features(
            images[start : start + batch_size].to(device)
        )
        logits.append(batch_logits.cpu())
        features.append(batch_features.cpu().double())
    classifier.train(was_training)
    return torch.cat(logits), torch.cat(features)


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Compute the Frechet distance between Gaussians fitted to two feature sets.

    ``d = |mu_a - mu_b|**2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)**(1/2))`` (Heusel et al. 2017,
    Eq. 6; Dowson and Landau 1982). The trace of the matrix square root is computed as
    ``sum sqrt(eig(S_a**(1/2) S_b S_a**(1/2)))``, a symmetric positive semi-definite matrix
    with the same eigenvalues as ``S_a S_b``, so that symmetric eigensolvers apply.

    Args:
        features_a, features_b: (N, d) and (M, d) with N, M >= 2; covariances use 1/(n - 1).

    Returns:
        the distance (0 for identical sets, up to rounding).
    """
    a = features_a.detach().cpu().double().numpy()
    b = features_b.detach().cpu().double().numpy()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (N, d) and (M, d), got {a.shape} and {b.shape}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"need at least 2 samples per set, got {a.shape[0]} and {b.shape[0]}")
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)

    eigenvalues, eigenvectors = np.linalg.eigh(cov_a)
    sqrt_cov_a = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T
    product = sqrt_cov_a @ cov_b @ sqrt_cov_a
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0.0, None)).sum()
    distance = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt
    return float(distance)


def feature_space_metrics(
    real: torch.Tensor, generated: torch.Tensor, *, k: int = 5, max_points: int = 5000
) -> dict[str, float]:
    """Compute FID-style distance and k-NN metrics between two feature sets.

    Args:
        real, generated: features (N, d) and (M, d).
        k: neighbour rank of precision, recall (Kynkaanniemi et al. 2019), density and coverage
            (Naeem et al. 2020).
        max_points: the k-NN metrics use seeded subsamples of at most this many points per set.

    Returns:
        ``fid``, ``precision``, ``recall``, ``density``, ``coverage``. The k-NN metrics are
        left out when a set has at most ``k`` points.
    """
    out = {"fid": frechet_distance(real, generated)}
    if min(real.shape[0], generated.shape[0]) <= k:
        logger.info(
            "k-NN metrics skipped: %d real, %d generated, k=%d", len(real), len(generated), k
        )
        return out
    x = subsample(real.double().numpy(), max_points, seed=0)
    y = subsample(generated.double().numpy(), max_points, seed=1)
    out["precision"], out["recall"] = precision_recall(x, y, k=k)
    out["density"], out["coverage"] = density_coverage(x, y, k=k)
    return out


def class_proportion_metrics(
    predicted: torch.Tensor, reference_proportions: Sequence[float] | torch.Tensor
) -> dict[str, float]:
    """Compare the class histogram of predicted labels with reference proportions.

    Args:
        predicted: predicted class of each generated image, (M,) integers.
        reference_proportions: class proportions of the training set, (K,), normalised here.

    Returns:
        ``class_tv``: total variation ``0.5 * sum_c |p_c - q_c|`` with ``p`` the generated and
        ``q`` the reference proportions; per class ``class_proportion_{c}`` (``p_c``) and
        ``class_ratio_{c}`` (``p_c / q_c``, NaN when ``q_c`` is 0).
    """
    reference = torch.as_tensor(reference_proportions, dtype=torch.float64).flatten()
    if reference.numel() < 1 or (reference < 0).any() or reference.sum() <= 0:
        raise ValueError(
            "reference proportions must be non-negative with a positive sum, "
            f"got {reference.tolist()}"
        )
    reference = reference / reference.sum()
    num_classes = reference.numel()
    if predicted.numel() and int(predicted.max()) >= num_classes:
        raise ValueError(
            f"predicted class {int(predicted.max())} has no reference proportion "
            f"({num_classes} given)"
        )
    counts = torch.bincount(predicted.long().flatten(), minlength=num_classes).double()
    generated = counts / max(predicted.numel(), 1)

    out = {"class_tv": float(0.5 * (generated - reference).abs().sum())}
    for c in range(num_classes):
        out[f"class_proportion_{c}"] = float(generated[c])
        ratio = generated[c] / reference[c] if reference[c] > 0 else float("nan")
        out[f"class_ratio_{c}"] = float(ratio)
    return out


def evaluate_images(
    real: torch.Tensor,
    generated: torch.Tensor,
    *,
    classifier: nn.Module | None = None,
    train_class_proportions: Sequence[float] | torch.Tensor | None = None,
    inception_weights: str | os.PathLike | None = None,
    k: int = 5,
) -> dict[str, float]:
    """Compute every image metric that the available networks allow.

    Non-finite generated values are replaced first (NaN by 0, infinities by +-1), and both sets
    are clipped to [-1, 1]. ``generated_nonfinite`` is the fraction of generated images that
    had a non-finite value.

    Args:
        real: reference images (N, C, H, W) in [-1, 1].
        generated: generated images (M, C, H, W).
        classifier: network with ``logits_and_features(x)`` (e.g. ``SmallCNN``); None skips the
            classifier metrics.
        train_class_proportions: class proportions of the training set, (K,); None uses the
            classifier's predicted proportions on ``real``.
        inception_weights: Inception-v3 weights file (see :func:`find_inception_weights`).
        k: neighbour rank of the k-NN metrics.

    Returns:
        ``generated_nonfinite``; with Inception weights, ``inception_fid``,
        ``inception_precision``, ``inception_recall``, ``inception_density``,
        ``inception_coverage``; with a classifier, the same with prefix ``classifier_``, and
        ``class_tv``, ``class_proportion_{c}``, ``class_ratio_{c}``
        (:func:`class_proportion_metrics`).
    """
    if real.ndim != 4 or generated.ndim != 4 or real.shape[1:] != generated.shape[1:]:
        raise ValueError(
            f"real and generated must be (N, C, H, W) of one image shape, got "
            f"{tuple(real.shape)} and {tuple(generated.shape)}"
        )
    real = real.detach().cpu().float().clamp(-1.0, 1.0)
    generated = generated.detach().cpu().float()
    nonfinite = ~torch.isfinite(generated).flatten(1).all(dim=1)
    generated = torch.nan_to_num(generated, nan=0.0, posinf=1.0, neginf=-1.0).clamp(-1.0, 1.0)
    out = {"generated_nonfinite": float(nonfinite.double().mean())}

    weights = find_inception_weights(inception_weights)
    if weights is None:
        global _INCEPTION_SKIP_LOGGED
        # One line per process: an evaluation scores several variants and epochs.
        if not _INCEPTION_SKIP_LOGGED:
            logger.info(
                "Inception metrics skipped: no weights file (set %s or pass inception_weights)",
                INCEPTION_WEIGHTS_ENV,
            )
            _INCEPTION_SKIP_LOGGED = True
    else:
        # One pass over both sets, so the network is loaded once.
        features = inception_features(torch.cat([real, generated]), weights)
        metrics = feature_space_metrics(features[: len(real)], features[len(real) :], k=k)
        out.update({f"inception_{key}": value for key, value in metrics.items()})

    if classifier is not None:
        real_logits, real_features = classifier_outputs(classifier, real)
        generated_logits, generated_features = classifier_outputs(classifier, generated)
        metrics = feature_space_metrics(real_features, generated_features, k=k)
        out.update({f"classifier_{key}": value for key, value in metrics.items()})

        if train_class_proportions is None:
            num_classes = real_logits.shape[1]
            counts = torch.bincount(real_logits.argmax(1), minlength=num_classes).double()
            train_class_proportions = counts / counts.sum()
        out.update(class_proportion_metrics(generated_logits.argmax(1), train_class_proportions))
    return out
