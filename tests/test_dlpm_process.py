"""DLPM schedules, forward process and loss elements against closed forms and DDPM at alpha 2."""

import math

import pytest
import torch

from dlpm.methods.dlpm import (
    DLPM,
    EDM_SIGMA_MAX,
    EDM_SIGMA_MIN,
    cosine_alpha_bar,
)


def ddpm_cosine(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent DDPM cosine schedule: (beta_t, alphabar_t) for t = 0 .. T-1, float64."""
    s = 0.008
    f = [math.cos(((t / steps) + s) / (1 + s) * math.pi / 2) ** 2 for t in range(steps)]
    alphabar = torch.tensor([v / f[0] for v in f], dtype=torch.float64)
    beta = torch.tensor(
        [0.0] + [1 - alphabar[t].item() / alphabar[t - 1].item() for t in range(1, steps)],
        dtype=torch.float64,
    )
    return beta, alphabar


@pytest.mark.parametrize("alpha", [1.2, 1.5, 1.7, 2.0])
@pytest.mark.parametrize("spacing", ["linear", "quadratic"])
def test_scale_preserving_identity(alpha, spacing):
    process = DLPM(alpha, "cpu", 200, time_spacing=spacing)
    schedule = process.schedule_float64
    total = schedule.gamma_bar**alpha + schedule.sigma_bar**alpha
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-12)
    one_step = schedule.gamma**alpha + schedule.sigma**alpha
    torch.testing.assert_close(one_step, torch.ones_like(one_step), rtol=0, atol=1e-12)


@pytest.mark.parametrize("alpha", [1.5, 2.0])
def test_schedules_are_monotone(alpha):
    process = DLPM(alpha, "cpu", 100)
    assert (torch.diff(process.gamma_bar) < 0).all()
    assert (torch.diff(process.sigma_bar) > 0).all()
    assert process.gamma_bar[0].item() == 1.0
    assert process.sigma_bar[0].item() == 0.0
    for name in ("gamma", "gamma_bar", "sigma", "sigma_bar"):
        values = getattr(process, name)
        assert values.shape == (100,)
        assert values.dtype == torch.float32


def test_gamma_bar_from_cosine_schedule():
    alpha, steps = 1.7, 50
    _, alphabar = ddpm_cosine(steps)
    process = DLPM(alpha, "cpu", steps)
    torch.testing.assert_close(process.schedule_float64.gamma_bar, alphabar ** (1 / alpha))


def test_quadratic_spacing_places_steps_near_the_data():
    linear = DLPM(1.7, "cpu", 100, time_spacing="linear")
    quadratic = DLPM(1.7, "cpu", 100, time_spacing="quadratic")
    assert quadratic.sigma_bar[10] < linear.sigma_bar[10]
    tau = (torch.arange(100, dtype=torch.float64) / 100) ** 2
    expected = cosine_alpha_bar(tau) ** (1 / 1.7)
    torch.testing.assert_close(quadratic.schedule_float64.gamma_bar, expected)


@pytest.mark.parametrize("alpha", [1.5, 2.0])
def test_scale_exploding_end_points(alpha):
    process = DLPM(alpha, "cpu", 40, scale="scale_exploding")
    schedule = process.schedule_float64
    assert torch.equal(schedule.gamma, torch.ones(40, dtype=torch.float64))
    assert torch.equal(schedule.gamma_bar, torch.ones(40, dtype=torch.float64))
    assert schedule.sigma_bar[0].item() == pytest.approx(EDM_SIGMA_MIN, rel=1e-12)
    assert schedule.sigma_bar[-1].item() == pytest.approx(EDM_SIGMA_MAX, rel=1e-12)
    # The alpha-stable scales of the increments add up to sigma_bar.
    torch.testing.assert_close(
        torch.cumsum(schedule.sigma**alpha, 0), schedule.sigma_bar**alpha, rtol=1e-10, atol=0
    )


def test_rebuild_for_fewer_steps():
    process = DLPM(1.7, "cpu", 100)
    smaller = process.rebuild(25)
    assert smaller.gamma.shape == (25,)
    assert process.gamma.shape == (100,)
    torch.testing.assert_close(
        smaller.schedule_float64.gamma_bar, DLPM(1.7, "cpu", 25).schedule_float64.gamma_bar
    )


def test_rebuild_keeps_a_scale_exploding_schedule_exploding():
    process = DLPM(1.7, "cpu", 100, scale="scale_exploding")
    smaller = process.rebuild(10)
    assert smaller.scale == "scale_exploding"
    assert torch.equal(smaller.gamma_bar, torch.ones(10))
    assert smaller.sigma_bar[-1].item() == pytest.approx(EDM_SIGMA_MAX, rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": 2.5}, "alpha"),
        ({"diffusion_steps": 1}, "diffusion_steps"),
        ({"scale": "linear"}, "scale"),
        ({"time_spacing": "cubic"}, "time_spacing"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    arguments = {"alpha": 1.7, "device": "cpu", "diffusion_steps": 10} | kwargs
    with pytest.raises(ValueError, match=match):
        DLPM(**arguments)


def test_q_sample_is_the_marginal():
    process = DLPM(1.7, "cpu", 100)
    x_start = torch.randn(4, 3)
    eps = torch.randn(4, 3)
    t = torch.tensor([1, 10, 50, 99])
    expected = process.gamma_bar[t, None] * x_start + process.sigma_bar[t, None] * eps
    torch.testing.assert_close(process.q_sample(x_start, t, eps), expected)
    torch.testing.assert_close(
        process.predict_x_start(expected, t, eps), x_start, rtol=1e-4, atol=1e-4
    )


def test_loss_elements_at_alpha_two():
    steps = 100
    process = DLPM(2.0, "cpu", steps)
    _, alphabar = ddpm_cosine(steps)
    x_start = torch.randn(6, 2, dtype=torch.float64)
    z = torch.randn(6, 2, dtype=torch.float64)
    t = torch.tensor([1, 5, 20, 50, 80, 99])
    a = process.draw_a(process.a_shape((6, 2)), dtype=torch.float64)
    assert torch.equal(a, torch.full_like(a, 2.0))
    process.schedule = process.schedule_float64  # compare in float64
    x_t, eps = process.loss_elements(x_start, t, a, z)
    # DDPM with noise N(0, 2 I): x_t = sqrt(alphabar) x_0 + sqrt(1 - alphabar) sqrt(2) z.
    expected = (
        alphabar[t, None].sqrt() * x_start + (1 - alphabar[t, None]).sqrt() * math.sqrt(2) * z
    )
    torch.testing.assert_close(x_t, expected)
    torch.testing.assert_close(eps, math.sqrt(2) * z)


def test_anterior_moments_at_alpha_two():
    steps = 100
    process = DLPM(2.0, "cpu", steps)
    process.schedule = process.schedule_float64
    beta, alphabar = ddpm_cosine(steps)
    x_start = torch.randn(5, 3, dtype=torch.float64)
    x_t = torch.randn(5, 3, dtype=torch.float64)
    t = torch.tensor([1, 2, 30, 70, 99])
    two = torch.full((5, 1), 2.0, dtype=torch.float64)
    mean, variance = process.anterior_mean_variance(x_start, x_t, t, two, two)

    # DDPM posterior q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eq. 7), written from alphabar alone.
    ab, ab_prev, b = alphabar[t, None], alphabar[t - 1, None], beta[t, None]
    coef_x0 = ab_prev.sqrt() * b / (1 - ab)
    coef_xt = (1 - b).sqrt() * (1 - ab_prev) / (1 - ab)
    torch.testing.assert_close(mean, coef_x0 * x_start + coef_xt * x_t)
    torch.testing.assert_close(
        variance.expand_as(mean), (2 * b * (1 - ab_prev) / (1 - ab)).expand_as(mean)
    )


def test_gaussian_baseline_has_unit_noise():
    process = DLPM(1.3, "cpu", 50, gaussian=True)
    assert process.alpha == 2.0
    a, eps = process.draw_noise((20_000, 2), generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, torch.ones_like(a))
    # Sample variance of N(0, 1): standard error sqrt(2/n).
    assert abs(eps.double().var().item() - 1.0) < 5 * math.sqrt(2 / 40_000)
