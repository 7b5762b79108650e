"""Tests of the synthetic data sets and noise generator in bem.datasets.Data."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import levy_stable

from bem.datasets.Data import GRID_9_WEIGHTS, Generator


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", Generator.available_distributions)
def test_default_shape_and_finite(name):
    x = Generator(name, nsamples=500).generate(generator=seeded(0))
    assert x.shape == (500, 2)
    assert x.dtype == torch.float32
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("name", Generator.available_distributions)
def test_seed_repeatability(name):
    generator = Generator(name, nsamples=300)
    first = generator.generate(generator=seeded(7))
    second = generator.generate(generator=seeded(7))
    other = generator.generate(generator=seeded(8))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_dtype_float64():
    x = Generator("gmm_grid", nsamples=10, dtype="float64").generate(generator=seeded(0))
    assert x.dtype == torch.float64


def test_grid_default_weights():
    generator = Generator("gmm_grid")
    assert generator.n_modes == 9
    assert torch.allclose(generator.weights, torch.tensor(GRID_9_WEIGHTS, dtype=torch.float64))
    assert math.isclose(sum(GRID_9_WEIGHTS), 1.0)
    assert min(GRID_9_WEIGHTS) == 0.01
    assert max(GRID_9_WEIGHTS) == 0.3


def test_grid_centers_spacing():
    centers = Generator("gmm_grid", n_mixture=16, theta=2.0).centers
    assert centers.shape == (16, 2)
    assert torch.allclose(centers.mean(dim=0), torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(
        torch.unique(centers[:, 0]), torch.tensor([-3.0, -1.0, 1.0, 3.0]).double()
    )


@pytest.mark.parametrize("name", ["gmm_grid", "sas_grid", "gmm_2"])
def test_mixture_proportions(name):
    n = 20_000
    generator = Generator(name, data_alpha=1.7)
    _, labels = generator.generate((n, 2), generator=seeded(1), return_labels=True)
    observed = torch.bincount(labels, minlength=generator.n_modes).double() / n
    # Each count is Binomial(n, w): standard deviation sqrt(w (1 - w) / n) <= 0.0036 at n = 2e4;
    # 5 standard deviations leave a false alarm rate below 1e-5 over the modes.
    tolerance = 5 * torch.sqrt(generator.weights * (1 - generator.weights) / n)
    assert torch.all((observed - generator.weights).abs() <= tolerance)


def test_gmm_labels_match_centers():
    generator = Generator("gmm_grid", std=0.05)
    x, labels = generator.generate((5000, 2), generator=seeded(2), return_labels=True)
    distance = (x.double() - generator.centers[labels]).norm(dim=1)
    # The distance to the own centre is 0.05 * chi(2 d.o.f.): P(> 0.05 * 6) = exp(-18) ~ 1.5e-8.
    assert distance.max() < 0.3


def test_gmm_std_per_coordinate():
    generator = Generator("gmm_2", std=0.2, theta=3.0)
    x, labels = generator.generate((20_000, 2), generator=seeded(3), return_labels=True)
    residual = x.double() - generator.centers[labels]
    # Sample std of 2e4 Gaussian draws has relative standard error 1/sqrt(2 n) = 0.005. Allow 5x.
    assert torch.allclose(residual.std(dim=0), torch.full((2,), 0.2).double(), rtol=0.025)
    assert torch.allclose(generator.centers[:, 0], torch.tensor([-3.0, 3.0]).double())


@pytest.mark.parametrize("isotropic", [True, False])
def test_sas_scale_against_scipy(isotropic):
    n, alpha, scale = 20_000, 1.7, 0.05
    generator = Generator("sas", data_alpha=alpha, std=scale, isotropic=isotropic)
    x = generator.generate((n, 2), generator=seeded(4)).double().numpy()
    levels = np.array([0.05, 0.25, 0.75, 0.95])
    for j in range(2):
        # F(empirical p-quantile) has standard deviation sqrt(p (1 - p) / n) <= 0.0036. Allow 5x.
        cdf = levy_stable.cdf(np.quantile(x[:, j], levels), alpha, 0.0, scale=scale)
        assert np.all(np.abs(cdf - levels) <= 5 * np.sqrt(levels * (1 - levels) / n))


def test_sas_isotropic_shares_factor():
    x = Generator("sas", alpha=1.5, isotropic=True).generate((20_000, 2), generator=seeded(5))
    y = Generator("sas", alpha=1.5, isotropic=False).generate((20_000, 2), generator=seeded(5))
    # With one A per point, both coordinates exceed 5 together far more often than
    # independent coordinates do.
    both_large_iso = ((x.abs() > 5).all(dim=1)).double().mean()
    both_large_ind = ((y.abs() > 5).all(dim=1)).double().mean()
    assert both_large_iso > 5 * both_large_ind


def test_sas_gaussian_limit_variance():
    x = Generator("sas", alpha=2.0, std=0.5).generate((20_000, 2), generator=seeded(6))
    # At alpha 2 the coordinates are N(0, 2 std**2) = N(0, 0.5). The sample variance has
    # relative error sqrt(2 / n) = 0.01, and the tolerance is 5x that.
    assert torch.allclose(x.double().var(dim=0), torch.full((2,), 0.5).double(), rtol=0.05)


def test_core_noise_call_sas():
    generator = Generator("sas", alpha=1.7, isotropic=False, clamp_eps=None, device="cpu")
    eps = generator.generate(size=(64, 5), generator=seeded(0))
    assert eps.shape == (64, 5)
    assert torch.isfinite(eps).all()


def test_core_noise_call_skewed_levy():
    generator = Generator("skewed_levy", alpha=1.7, isotropic=True, clamp_a=None)
    a = generator.generate(size=(8, 3, 4, 4), generator=seeded(0))
    assert a.shape == (8, 3, 4, 4)
    assert (a > 0).all()
    # Isotropic: one A per batch element, repeated over the other dimensions.
    assert torch.equal(a, a[:, :1, :1, :1].expand_as(a))


def test_skewed_levy_non_isotropic_varies():
    a = Generator("skewed_levy", alpha=1.7, isotropic=False).generate((4, 6), seeded(0))
    assert a.unique().numel() == 24


def test_sas_image_shape():
    eps = Generator("sas", alpha=1.8).generate((2, 3, 8, 8), generator=seeded(0))
    assert eps.shape == (2, 3, 8, 8)


def test_normalized_standardises():
    x = Generator("gmm_grid", normalized=True).generate((3000, 2), generator=seeded(9))
    assert torch.allclose(x.mean(dim=0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(x.std(dim=0), torch.ones(2), atol=1e-5)


def test_between_minus_1_1_is_scalar_rescaling():
    raw = Generator("sas", std=0.05).generate((2000, 2), generator=seeded(10))
    mapped = Generator("sas", std=0.05, between_minus_1_1=True).generate((2000, 2), seeded(10))
    assert mapped.abs().max() == 1.0
    assert torch.allclose(mapped * raw.abs().max(), raw, rtol=1e-5, atol=1e-7)


def test_quantile_cutoff_drops_largest_norms():
    n, q = 1000, 0.9
    kept = Generator("sas", std=0.05, quantile_cutoff=q).generate((n, 2), seeded(11))
    drawn = Generator("sas", std=0.05).generate((math.ceil(n / q), 2), seeded(11))
    assert kept.shape == (n, 2)
    norms = drawn.norm(dim=1)
    threshold = norms.sort().values[n - 1]
    # The kept points are the drawn points with norm up to the threshold, in drawn order.
    assert torch.equal(kept, drawn[norms <= threshold])


def test_quantile_cutoff_keeps_labels_aligned():
    generator = Generator("sas_grid", std=0.05, quantile_cutoff=0.95)
    x, labels = generator.generate((2000, 2), seeded(12), return_labels=True)
    assert labels.shape == (2000,)
    median_offset = (x.double() - generator.centers[labels]).norm(dim=1).median()
    assert median_offset < 0.2


def test_swiss_roll_scale():
    x = Generator("swiss_roll", std=0.0).generate((20_000, 2), seeded(13))
    std = x.std(dim=0)
    assert torch.all((std > 0.85) & (std < 1.1))


def test_unknown_name_raises():
    with pytest.raises(ValueError, match="unknown distribution 'moons'.*gmm_grid"):
        Generator("moons")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"colour": 1}, "unknown parameter"),
        ({"weights": [0.5, 0.6]}, "sum to 1"),
        ({"weights": [0.5, 0.5, 0.0]}, "hold 2 numbers"),
        ({"nsamples": 0}, "nsamples"),
        ({"std": -1.0}, "std"),
        ({"quantile_cutoff": 0.0}, "quantile_cutoff"),
        ({"dtype": "int8"}, "dtype"),
    ],
)
def test_bad_params_raise(params, message):
    with pytest.raises(ValueError, match=message):
        Generator("gmm_2", **params)


def test_bad_grid_size_raises():
    with pytest.raises(ValueError, match="perfect square"):
        Generator("gmm_grid", n_mixture=8)


def test_bad_alpha_raises():
    with pytest.raises(ValueError, match="alpha"):
        Generator("sas", data_alpha=2.5)
    with pytest.raises(ValueError, match="disagree"):
        Generator("sas", data_alpha=1.5, alpha=1.7)


def test_bad_size_raises():
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        Generator("gmm_grid").generate((10, 3))


def test_labels_for_non_mixture_raise():
    with pytest.raises(ValueError, match="mixture"):
        Generator("sas").generate((10, 2), return_labels=True)
