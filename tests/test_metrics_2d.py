"""Tests of the 2D sample metrics in bem.metrics.two_d against known values."""

import math

import numpy as np
import pytest
import torch

from bem.metrics import two_d


def gaussian(n: int, seed: int, d: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


def test_wasserstein_of_shift_equals_shift_norm():
    # W1(mu, mu + v) >= |E[X] - E[Y]| = |v| by Jensen, and the identity coupling attains |v|, so
    # the value is exact for empirical measures too (no subsampling at n <= max_points).
    x = gaussian(400, 0)
    v = np.array([0.3, -0.4])
    assert two_d.wasserstein_1(x, x + v, max_points=None) == pytest.approx(0.5, rel=1e-9)


def test_wasserstein_accepts_tensors_and_subsamples():
    x = torch.from_numpy(gaussian(5000, 1)).float()
    v = torch.tensor([1.0, 0.0])
    value = two_d.wasserstein_1(x, x + v, max_points=1000)
    # The two sets are subsampled differently (a from x, b from x + v). The triangle inequality
    # gives |W1(a, b + v) - W1(b, b + v)| <= W1(a, b), and W1(b, b + v) = |v| = 1.
    subsample_gap = two_d.wasserstein_1(x, x, max_points=1000)
    assert 0.0 < subsample_gap < 0.3
    assert abs(value - 1.0) <= subsample_gap + 1e-9


def test_mmd_identical_sets_near_zero():
    x = gaussian(1000, 2)
    # For x == y the unbiased estimate is -2 (1 - mean off-diagonal kernel) / n, in [-2/n, 0].
    assert -2 / 1000 <= two_d.mmd_rbf(x, x) <= 0.0


def test_mmd_grows_with_shift():
    x, y = gaussian(1000, 3), gaussian(1000, 4)
    values = [two_d.mmd_rbf(x, y + np.array([shift, 0.0])) for shift in (0.0, 0.5, 1.0, 2.0)]
    assert abs(values[0]) < 0.01
    assert values[0] < values[1] < values[2] < values[3]


def test_precision_recall_identical_and_disjoint():
    x = gaussian(1000, 5)
    assert two_d.precision_recall(x, x, k=5) == (1.0, 1.0)
    assert two_d.precision_recall(x, x + 100.0, k=5) == (0.0, 0.0)


def test_precision_recall_same_distribution():
    precision, recall = two_d.precision_recall(gaussian(1000, 6), gaussian(1000, 7), k=5)
    # Measured over 20 seeds at n = 1000: mean 0.996, standard deviation 0.0025.
    assert precision > 0.97
    assert recall > 0.97


def test_precision_recall_mode_dropping():
    x = np.concatenate([gaussian(1000, 8), gaussian(1000, 9) + 20.0])
    y = gaussian(2000, 10)
    precision, recall = two_d.precision_recall(x, y, k=5)
    # The generated set covers one of two equal real modes.
    assert precision > 0.97
    assert abs(recall - 0.5) < 0.03


def test_density_coverage_identical_and_disjoint():
    x = gaussian(1000, 11)
    density, coverage = two_d.density_coverage(x, x, k=5)
    # Each real ball contains its own centre plus its k nearest neighbours: (k + 1) / k.
    assert density == pytest.approx(6 / 5)
    assert coverage == 1.0
    assert two_d.density_coverage(x, x + 100.0, k=5) == (0.0, 0.0)


def test_density_coverage_same_distribution():
    density, coverage = two_d.density_coverage(gaussian(1000, 12), gaussian(1000, 13), k=5)
    # E[density] = 1 (Naeem et al. 2020), and the measured standard deviation is 0.017 at n = 1000.
    assert abs(density - 1.0) < 0.1
    # E[coverage] ~ 1 - 2^-k = 0.969 for M = N, with binomial sd sqrt(0.03 * 0.97 / 1000) = 0.0055.
    assert abs(coverage - (1 - 2**-5)) < 0.03


def test_prd_identical_sets():
    x = gaussian(1000, 14)
    scores = two_d.prd_scores(*two_d.prd_curve(x, x, num_runs=2))
    # Equal histograms give precision = recall = 1 at slope 1, the middle angle.
    assert scores["prd_f1"] == pytest.approx(1.0, abs=1e-6)
    assert scores["prd_precision"] == pytest.approx(1.0, abs=1e-3)
    assert scores["prd_recall"] == pytest.approx(1.0, abs=1e-3)


def test_prd_disjoint_sets():
    x = gaussian(1000, 15)
    scores = two_d.prd_scores(*two_d.prd_curve(x, x + 100.0, num_runs=2))
    assert scores["prd_f1"] == 0.0
    assert scores["prd_precision"] == 0.0
    assert scores["prd_recall"] == 0.0
    assert scores["prd_f1_summary"] == 0.0


def test_prd_half_coverage():
    x = np.concatenate([gaussian(1000, 16), gaussian(1000, 17) + 50.0])
    y = np.concatenate([gaussian(2000, 18)])
    precision, recall = two_d.prd_curve(x, y, num_runs=2)
    # Q puts all mass on half of P: the curve reaches precision 1 at recall 0.5 and no further.
    assert recall.max() == pytest.approx(0.5, abs=0.05)
    assert precision.max() == pytest.approx(1.0, abs=1e-6)


def test_tail_masses_equal_sets():
    n = 20_000
    x = gaussian(n, 19)
    masses = two_d.tail_masses(x, x)
    for q in (0.9, 0.99, 0.999):
        real, gen = masses[f"tail_mass_real_q{q:g}"], masses[f"tail_mass_gen_q{q:g}"]
        assert real == gen
        # Exactly floor-rounded: the count above the interpolated quantile is within 1 of n(1-q).
        assert abs(real - (1 - q)) <= 1 / n


def test_tail_masses_independent_and_scaled():
    n = 20_000
    x, y = gaussian(n, 20), gaussian(n, 21)
    masses = two_d.tail_masses(x, y)
    for q in (0.9, 0.99):
        # Binomial count plus the quantile's own error give sd sqrt(2 q (1 - q) / n). Allow 5 sd.
        tolerance = 5 * math.sqrt(2 * q * (1 - q) / n)
        assert abs(masses[f"tail_mass_gen_q{q:g}"] - (1 - q)) <= tolerance
    # For N(0, I) in 2D, P(|Y| > r) = exp(-r^2 / 2). With Y = 2 X the 0.99 threshold
    # r = sqrt(2 log 100) gives P(|X| > r / 2) = 100^(-1/4) = 0.316.
    scaled = two_d.tail_masses(x, 2 * y, quantiles=(0.99,))
    assert abs(scaled["tail_mass_gen_q0.99"] - 100**-0.25) < 0.02


def test_tail_masses_count_nonfinite_as_tail():
    x = gaussian(100, 22)
    y = x.copy()
    y[0] = np.nan
    masses = two_d.tail_masses(x, y, quantiles=(0.5,))
    # The NaN row replaces a point and counts as above any threshold.
    assert masses["tail_mass_gen_q0.5"] >= masses["tail_mass_real_q0.5"]


def test_msle_zero_for_identical_sets():
    x = gaussian(5000, 23)
    result = two_d.msle_quantiles(x, x)
    assert result == {"msle_norm": 0.0, "msle_coord": 0.0}


def test_msle_of_scaled_set_is_log_squared():
    x = gaussian(5000, 24)
    c = 3.0
    result = two_d.msle_quantiles(x, c * x)
    assert result["msle_norm"] == pytest.approx(math.log(c) ** 2, rel=1e-9)
    assert result["msle_coord"] == pytest.approx(math.log(c) ** 2, rel=1e-9)


def test_msle_levels_grid():
    assert two_d.MSLE_LEVELS[0] == 0.95
    assert two_d.MSLE_LEVELS.max() < 1.0
    assert len(two_d.MSLE_LEVELS) == 1000


def test_per_mode_metrics_copy_and_missing_mode():
    centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = np.repeat([0, 1, 2], [500, 300, 200])
    x = centers[labels] + 0.1 * gaussian(1000, 25)
    same = two_d.per_mode_metrics(x, labels, x)
    assert same["mode_tv"] == 0.0
    assert same["mode1_weight_gen"] == pytest.approx(0.3)
    assert same["mode2_precision"] == 1.0
    assert same["mode2_recall"] == 1.0

    without_mode_2 = x[labels != 2]
    missing = two_d.per_mode_metrics(x, labels, without_mode_2)
    assert missing["mode2_weight_gen"] == 0.0
    assert missing["mode2_recall"] == 0.0
    assert math.isnan(missing["mode2_precision"])
    assert missing["mode_tv"] == pytest.approx(0.2)


def test_mode_proportions_nearest_center():
    centers = np.array([[0.0, 0.0], [1.0, 0.0]])
    points = np.array([[0.1, 0.0], [0.9, 0.0], [0.8, 0.3], [-1.0, 0.0]])
    assignment, proportions = two_d.mode_proportions(points, centers)
    assert assignment.tolist() == [0, 1, 1, 0]
    assert proportions.tolist() == [0.5, 0.5]


def test_evaluate_2d_keys_and_identical_values():
    x = gaussian(600, 26)
    result = two_d.evaluate_2d(x, x, prd_runs=2)
    expected = {
        "wasserstein",
        "mmd",
        "precision",
        "recall",
        "f1",
        "density",
        "coverage",
        "prd_precision",
        "prd_recall",
        "prd_f1",
        "msle_norm",
        "msle_coord",
        "max_norm_gen",
        "max_norm_real",
        "tail_mass_real_q0.9",
        "tail_mass_gen_q0.999",
    }
    assert expected <= set(result)
    assert all(isinstance(value, float) for value in result.values())
    assert result["wasserstein"] == pytest.approx(0.0, abs=1e-6)
    assert result["f1"] == 1.0
    assert result["msle_norm"] == 0.0
    assert result["max_norm_gen"] == result["max_norm_real"]


def test_evaluate_2d_drops_nonfinite_rows():
    x = gaussian(400, 27)
    y = gaussian(400, 28)
    y[:4] = np.inf
    result = two_d.evaluate_2d(x, y, prd_runs=1)
    assert result["nonfinite_gen"] == pytest.approx(0.01)
    assert result["max_norm_gen"] == math.inf
    assert math.isfinite(result["wasserstein"])


def test_bad_input_raises():
    with pytest.raises(ValueError, match="shape"):
        two_d.wasserstein_1(np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match="dimensions differ"):
        two_d.evaluate_2d(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="k must"):
        two_d.precision_recall(np.zeros((3, 2)), np.zeros((3, 2)), k=5)
