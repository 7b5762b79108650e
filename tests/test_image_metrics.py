"""Image metrics and the data-set classifier: known results, offline only."""

import logging

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from bem.datasets.images import get_image_dataset
from bem.metrics import classifier as classifier_module
from bem.metrics.classifier import SmallCNN, classifier_cache_path, load_or_train_classifier
from bem.metrics.images import (
    INCEPTION_WEIGHTS_ENV,
    class_proportion_metrics,
    evaluate_images,
    find_inception_weights,
    frechet_distance,
)


@pytest.fixture(autouse=True)
def no_inception_download(monkeypatch, tmp_path):
    """Point torch.hub at an empty folder and make any download attempt fail the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)

    def reject_download(*args, **kwargs):
        raise AssertionError("a metric tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", reject_download)
    import torch_fidelity.feature_extractor_inceptionv3 as inception_module

    monkeypatch.setattr(inception_module, "load_state_dict_from_url", reject_download)


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """Run this module on one thread: OpenMP threads spin and stall on shared CPU cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def digits():
    dataset = get_image_dataset("digits")
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    return images, dataset.labels.clone()


@pytest.fixture(scope="module")
def digits_classifier(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("data_root")
    return load_or_train_classifier("digits", get_image_dataset("digits"), root, steps=400)


def test_frechet_distance_gaussian_known_answer():
    # N(0, I) against N(m, 4 I) in d = 4 with |m| = 1: |m|**2 + d (1 + 4 - 2 * 2) = 5.
    generator = torch.Generator().manual_seed(0)
    n, d = 20_000, 4
    a = torch.randn(n, d, generator=generator, dtype=torch.float64)
    b = 2.0 * torch.randn(n, d, generator=generator, dtype=torch.float64)
    b[:, 0] += 1.0
    # Over 20 seeds the estimate had standard deviation 0.064 (the mean term alone contributes
    # 2 |m| sqrt(5 / n) = 0.032); 0.35 is more than 5 standard deviations.
    assert abs(frechet_distance(a, b) - 5.0) < 0.35


def test_frechet_distance_matches_scipy_sqrtm():
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(300, 16, generator=generator, dtype=torch.float64)
    b = 1.5 * torch.randn(300, 16, generator=generator, dtype=torch.float64) + 0.2
    cov_a, cov_b = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    mean_term = np.sum((a.numpy().mean(0) - b.numpy().mean(0)) ** 2)
    sqrt_product = scipy.linalg.sqrtm(cov_a @ cov_b).real
    expected = mean_term + np.trace(cov_a + cov_b - 2.0 * sqrt_product)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_identical_sets_is_zero():
    a = torch.randn(200, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    # Rounding only: the trace of the covariance is about 64.
    assert abs(frechet_distance(a, a)) < 1e-8


def test_class_proportions_known_answer():
    predicted = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    out = class_proportion_metrics(predicted, [0.5, 0.25, 0.25])
    assert out["class_tv"] == pytest.approx(0.05)
    assert out["class_proportion_1"] == pytest.approx(0.3)
    assert out["class_ratio_0"] == pytest.approx(1.0)
    assert out["class_ratio_1"] == pytest.approx(1.2)
    assert out["class_ratio_2"] == pytest.approx(0.8)


def test_class_proportions_missing_reference_class():
    out = class_proportion_metrics(torch.tensor([0, 1]), [1.0, 0.0])
    assert out["class_tv"] == pytest.approx(0.5)
    assert np.isnan(out["class_ratio_1"])


def test_class_proportions_reject_bad_reference():
    with pytest.raises(ValueError, match="non-negative"):
        class_proportion_metrics(torch.tensor([0]), [0.0, 0.0])


class BrightnessClassifier(nn.Module):
    """Exact classifier for test images whose constant grey level encodes the class."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.centers = nn.Parameter(torch.linspace(-1, 1, num_classes), requires_grad=False)

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        level = x.mean(dim=(1, 2, 3))
        logits = -((level[:, None] - self.centers[None, :]) ** 2)
        return logits, x.flatten(1)


def grey_images(counts: list[int], noise: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    levels = torch.linspace(-1, 1, len(counts)).repeat_interleave(torch.tensor(counts))
    images = levels[:, None, None, None] + noise * torch.randn(
        len(levels), 1, 4, 4, generator=generator
    )
    return images.clamp(-1, 1)


def test_evaluate_images_skewed_proportions_exact():
    real = grey_images([40, 40, 40, 40], noise=0.02, seed=0)
    generated = grey_images([100, 60, 30, 10], noise=0.02, seed=1)
    out = evaluate_images(
        real,
        generated,
        classifier=BrightnessClassifier(4),
        train_class_proportions=[0.25, 0.25, 0.25, 0.25],
    )
    # Generated proportions 0.5, 0.3, 0.15, 0.05 against 0.25 each:
    # TV = 0.5 * (0.25 + 0.05 + 0.1 + 0.2) = 0.3.
    assert out["class_tv"] == pytest.approx(0.3)
    assert out["class_ratio_0"] == pytest.approx(2.0)
    assert out["class_ratio_3"] == pytest.approx(0.2)


def test_evaluate_images_reference_from_real_predictions():
    real = grey_images([30, 10], noise=0.0, seed=0)
    generated = grey_images([20, 20], noise=0.0, seed=1)
    out = evaluate_images(real, generated, classifier=BrightnessClassifier(2))
    # Reference 0.75, 0.25 from the real set; generated 0.5 each: TV = 0.25.
    assert out["class_tv"] == pytest.approx(0.25)


def test_evaluate_images_identical_sets(digits, digits_classifier):
    images = digits[0][:400]
    out = evaluate_images(images, images.clone(), classifier=digits_classifier)
    # Rounding only. Each of the 128 eigenvalues of S**2 is off by about 1e-16 * lmax**2, and
    # its square root by 1e-8 * lmax. The sum stays near 1e-6 * lmax, with lmax of order 10.
    assert abs(out["classifier_fid"]) < 1e-4
    assert out["classifier_precision"] == 1.0
    assert out["classifier_recall"] == 1.0
    assert out["classifier_coverage"] == 1.0
    assert out["class_tv"] == 0.0
    assert out["generated_nonfinite"] == 0.0


def test_evaluate_images_skewed_digits(digits, digits_classifier):
    images, labels = digits
    first_half = images[labels < 5]
    out = evaluate_images(
        images,
        first_half,
        classifier=digits_classifier,
        train_class_proportions=torch.bincount(labels) / len(labels),
    )
    # Only digits 0-4 (about half of the data set): TV is their complement, 0.5 (0.4997 for
    # these counts), up to the classifier's errors, which are below 10% (held-out accuracy).
    expected = float((labels >= 5).double().mean())
    assert abs(out["class_tv"] - expected) < 0.1
    assert all(out[f"class_ratio_{c}"] < 0.2 for c in range(5, 10))
    # The generated set misses half of the real manifold.
    assert out["classifier_recall"] < 0.8
    assert out["classifier_fid"] > 1.0


def test_evaluate_images_counts_nonfinite(digits, digits_classifier):
    images = digits[0][:100]
    generated = images.clone()
    generated[:10, 0, 0, 0] = float("nan")
    generated[10:15] = float("inf")
    out = evaluate_images(images, generated, classifier=digits_classifier)
    assert out["generated_nonfinite"] == pytest.approx(0.15)
    assert np.isfinite(out["classifier_fid"])


def test_classifier_accuracy_on_digits(digits, digits_classifier):
    images, labels = digits
    with torch.no_grad():
        predicted = digits_classifier(images).argmax(1)
    # Training accuracy of a 400-step CNN on 1,797 digits (held-out accuracy is logged).
    assert (predicted == labels).double().mean() > 0.9


def test_classifier_cache_reused(tmp_path, monkeypatch):
    torch.manual_seed(0)
    dataset = get_image_dataset("digits")
    first = load_or_train_classifier("digits", dataset, tmp_path, steps=5)
    path = classifier_cache_path("digits", dataset, tmp_path)
    assert path.is_file()
    assert not list(path.parent.glob("*.tmp"))

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier should have been loaded")

    monkeypatch.setattr(classifier_module, "train_classifier", no_training)
    second = load_or_train_classifier("digits", dataset, tmp_path)
    assert isinstance(second, SmallCNN)
    for key, value in first.state_dict().items():
        torch.testing.assert_close(second.state_dict()[key], value)


def test_inception_metrics_skipped_without_weights(digits, caplog, monkeypatch):
    # The message is logged once per process; reset that state so test order does not matter.
    monkeypatch.setattr("bem.metrics.images._INCEPTION_SKIP_LOGGED", False)
    images = digits[0][:20]
    with caplog.at_level(logging.INFO, logger="bem.metrics.images"):
        out = evaluate_images(images, images)
    assert not any(key.startswith("inception_") for key in out)
    skipped = [r for r in caplog.records if "Inception metrics skipped" in r.getMessage()]
    assert len(skipped) == 1


def test_inception_weights_env_must_exist(monkeypatch, tmp_path):
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        find_inception_weights()


def test_inception_weights_found_in_hub_cache(tmp_path):
    cache = tmp_path / "torch_home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    weights = cache / "weights-inception-2015-12-05-6726825d.pth"
    weights.write_bytes(b"")
    assert find_inception_weights() == weights


@pytest.mark.slow
def test_inception_pipeline_with_local_weights(tmp_path, monkeypatch, digits):
    """Run the Inception path on a randomly initialised network saved to a local file."""
    import torch_fidelity.feature_extractor_inceptionv3 as inception_module

    class RandomInception(inception_module.FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None  # keep the random initialisation

    monkeypatch.setattr(inception_module, "load_state_dict_from_url", lambda *a, **k: {})
    torch.manual_seed(0)
    network = RandomInception("inception-v3-compat", ["2048"])
    path = tmp_path / "inception.pth"
    torch.save(network.state_dict(), path)

    images = digits[0][:8]
    out = evaluate_images(images, images.clone(), inception_weights=path)
    assert "inception_fid" in out
    # Identical sets; 2048-d features of 8 images, so the rounding tolerance is loose.
    assert abs(out["inception_fid"]) < 1e-4
    assert out["inception_precision"] == 1.0
    assert out["inception_recall"] == 1.0
