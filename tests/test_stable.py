"""Alpha-stable sampling against scipy's levy_stable and the closed-form transforms.

Tolerances:
- sup-distance between an empirical CDF of n points and the true CDF: the DKW inequality
  P(sup |F_n - F| > e) <= 2 exp(-2 n e**2) gives e = sqrt(log(2/delta) / (2 n)), delta = 1e-6.
- means of variables bounded by 1 (cos(u eps), exp(-s A)): standard error <= 1/sqrt(n); we allow
  5 standard errors.
- two-sample KS against scipy's rvs: reject when the p-value is below 1e-4.
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.stats import levy_stable

from bem.datasets.Data import Generator
from bem.datasets.stable import (
    check_alpha,
    sample_sas,
    sample_skewed_levy,
    skewed_levy_scale,
)

ALPHAS = [1.2, 1.5, 1.7, 1.9, 1.99]


def dkw_bound(n: int, delta: float = 1e-6) -> float:
    return math.sqrt(math.log(2 / delta) / (2 * n))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("alpha", ALPHAS + [1.999])
def test_skewed_levy_laplace_transform(alpha):
    n = 200_000
    a = sample_skewed_levy(alpha, (n,), generator=seeded(1), dtype=torch.float64).numpy()
    for s in (0.1, 1.0, 3.0):
        empirical = np.exp(-s * a).mean()
        exact = math.exp(-((2 * s) ** (alpha / 2)))
        assert abs(empirical - exact) < 5 / math.sqrt(n), (s, empirical, exact)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_skewed_levy_matches_scipy_rvs(alpha):
    n = 20_000
    ours = sample_skewed_levy(alpha, (n,), generator=seeded(2), dtype=torch.float64).numpy()
    reference = levy_stable.rvs(
        alpha / 2, 1.0, loc=0.0, scale=skewed_levy_scale(alpha), size=n, random_state=3
    )
    assert stats.ks_2samp(ours, reference).pvalue > 1e-4


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("isotropic", [True, False])
def test_sas_marginal_matches_scipy_cdf(alpha, isotropic):
    n_rows, dim = 20_000, 3
    eps = sample_sas(alpha, (n_rows, dim), isotropic=isotropic, generator=seeded(4))
    # Each coordinate is SaS(alpha) with scale 1; test one coordinate (independent rows).
    x = eps[:, 0].double().numpy()
    grid = np.array([-20, -5, -2, -1, -0.5, -0.1, 0.0, 0.2, 0.7, 1.5, 3, 8, 30])
    empirical = (x[:, None] <= grid).mean(0)
    exact = levy_stable.cdf(grid, alpha, 0.0)
    assert np.abs(empirical - exact).max() < dkw_bound(n_rows)


@pytest.mark.parametrize("alpha", [1.5, 1.8, 1.99])
@pytest.mark.parametrize("isotropic", [True, False])
def test_sas_characteristic_function(alpha, isotropic):
    n = 100_000
    eps = sample_sas(alpha, (n, 2), isotropic=isotropic, generator=seeded(5)).double()
    for u in (0.3, 1.0, 2.5):
        empirical = torch.cos(u * eps[:, 1]).mean().item()
        assert abs(empirical - math.exp(-(u**alpha))) < 5 / math.sqrt(n)


def test_isotropic_noise_shares_a_within_an_example():
    # With one A per example, eps_1 / eps_2 = z_1 / z_2 is exactly standard Cauchy.
    n = 20_000
    eps = sample_sas(1.5, (n, 2), isotropic=True, generator=seeded(6)).double().numpy()
    ratio = eps[:, 0] / eps[:, 1]
    grid = np.array([-10, -2, -1, -0.3, 0, 0.5, 1, 3, 10.0])
    empirical = (ratio[:, None] <= grid).mean(0)
    assert np.abs(empirical - stats.cauchy.cdf(grid)).max() < dkw_bound(n)


def test_non_isotropic_coordinates_are_independent():
    # Shared A makes |eps_1| and |eps_2| positively dependent; independent coordinates do not.
    n = 20_000
    iso = sample_sas(1.5, (n, 2), isotropic=True, generator=seeded(7)).abs().numpy()
    non_iso = sample_sas(1.5, (n, 2), isotropic=False, generator=seeded(7)).abs().numpy()
    # Spearman's rho under independence has standard deviation 1/sqrt(n - 1).
    rho_iso = stats.spearmanr(iso[:, 0], iso[:, 1]).statistic
    rho_non_iso = stats.spearmanr(non_iso[:, 0], non_iso[:, 1]).statistic
    assert rho_iso > 0.1
    assert abs(rho_non_iso) < 5 / math.sqrt(n - 1)


def test_alpha_two_is_exactly_gaussian():
    a = sample_skewed_levy(2.0, (1000,), generator=seeded(8))
    assert torch.equal(a, torch.full_like(a, 2.0))
    eps = sample_sas(2.0, (50_000, 1), isotropic=False, generator=seeded(8)).double()
    # eps ~ N(0, 2): the sample variance has standard error about 2 * sqrt(2 / n).
    assert abs(eps.var().item() - 2.0) < 5 * 2 * math.sqrt(2 / 50_000)


def test_clamps_hold():
    a = sample_skewed_levy(1.5, (10_000,), clamp_a=3.0, generator=seeded(9))
    assert a.max().item() <= 3.0
    assert a.min().item() >= 0.0
    for isotropic in (True, False):
        eps = sample_sas(1.2, (2_000, 4), isotropic=isotropic, clamp_eps=2.5, generator=seeded(9))
        assert eps.abs().max().item() <= 2.5
        clamped_a = sample_sas(
            1.2, (2_000, 4), isotropic=isotropic, clamp_a=1.0, generator=seeded(9)
        )
        # |eps| = sqrt(A) |z| <= |z|, and Gaussian draws beyond 7 are practically impossible.
        assert clamped_a.abs().max().item() < 7.0


@pytest.mark.parametrize("isotropic", [True, False])
def test_seeded_draws_repeat(isotropic):
    first = sample_sas(1.7, (64, 3, 4, 4), isotropic=isotropic, generator=seeded(10))
    second = sample_sas(1.7, (64, 3, 4, 4), isotropic=isotropic, generator=seeded(10))
    third = sample_sas(1.7, (64, 3, 4, 4), isotropic=isotropic, generator=seeded(11))
    assert torch.equal(first, second)
    assert not torch.equal(first, third)


@pytest.mark.parametrize("alpha", [0.0, -1.0, 2.01, 3, float("nan"), "x"])
def test_bad_alpha_raises(alpha):
    with pytest.raises(ValueError, match="alpha"):
        check_alpha(alpha)
    with pytest.raises(ValueError, match="alpha"):
        sample_sas(alpha, (4, 2))


def test_alpha_below_one_warns():
    with pytest.warns(UserWarning, match="infinite mean"):
        sample_skewed_levy(0.8, (10,))


def test_dtype_and_device_are_respected():
    eps = sample_sas(1.7, (8, 2), isotropic=False, dtype=torch.float64, device="cpu")
    assert eps.dtype == torch.float64
    assert eps.device.type == "cpu"


def test_generator_facade_calls():
    noise = Generator("sas", alpha=1.7, isotropic=False, clamp_eps=None, device="cpu")
    assert noise.generate(size=(100, 2)).shape == (100, 2)
    skewed = Generator("skewed_levy", alpha=1.7, isotropic=True, clamp_a=None)
    a = skewed.generate(size=(5, 1, 4, 4))
    assert a.shape[0] == 5
    assert (a > 0).all()
    assert "sas" in Generator.available_distributions
    assert "skewed_levy" in Generator.available_distributions
