"""Tests for the Levy-Ito model: schedule identities, loss scale, oracle samplers and training."""

import math

import numpy as np
import pytest
import torch

from bem.datasets.stable import sample_sas
from dlpm.methods.lim import LevyVPSDE, lim_sample, lim_training_losses

ALPHAS = [1.5, 1.8, 2.0]
TIMES = torch.linspace(1e-5, 0.9946, 101, dtype=torch.float64)


def point_mass_oracle(sde: LevyVPSDE, center: torch.Tensor):
    """Return the exact network for data at ``center``: ``-(x - a(t) c)/(alpha sigma(t))``.

    For a point mass the marginal is ``a(t) c + sigma(t) eps``, so this equals ``-eps/alpha``,
    the training target, for every ``x``.
    """

    def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t64 = t.double()
        mean = sde.mean_coeff(t64).to(x.dtype)[:, None] * center.to(x.dtype)
        scale = sde.marginal_scale(t64).to(x.dtype)[:, None]
        return -(x - mean) / (sde.alpha * scale)

    return net


def cosine_alpha_bar(t: np.ndarray, s: float = 0.008) -> np.ndarray:
    """Return the cosine schedule ``f(t)/f(0)`` with ``f(u) = cos((u + s)/(1 + s) pi/2)**2``."""

    def f(u):
        return np.cos((u + s) / (1.0 + s) * np.pi / 2.0) ** 2

    return f(t) / f(0.0)


# Schedule identities.


def test_alpha_two_matches_cosine_vp_coefficients():
    sde = LevyVPSDE(2.0)
    alpha_bar = torch.from_numpy(cosine_alpha_bar(TIMES.numpy()))
    torch.testing.assert_close(sde.mean_coeff(TIMES), alpha_bar.sqrt(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        sde.marginal_scale(TIMES), (1.0 - alpha_bar).sqrt(), rtol=1e-9, atol=1e-12
    )


def test_alpha_two_noise_has_variance_two():
    # At alpha 2, eps ~ N(0, 2 I), so x_t = sqrt(alpha_bar) x_0 + sqrt(2 (1 - alpha_bar)) z with
    # z ~ N(0, I): the Gaussian VP-SDE with twice the noise variance of DDPM. The network target
    # -eps/2 is then -z/sqrt(2) in terms of DDPM's z.
    sde = LevyVPSDE(2.0)
    n = 20000
    noise = sample_sas(2.0, (n, 1), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.full((n,), 0.5, dtype=torch.float64)
    x_t = sde.marginal(torch.zeros(n, 1, dtype=torch.float64), t, noise)
    expected = 2.0 * (1.0 - cosine_alpha_bar(np.array(0.5))).item()
    # The sample variance of n normals has relative standard deviation sqrt(2/n) = 0.01; 5 of them.
    assert abs(x_t.var().item() / expected - 1.0) < 5.0 * math.sqrt(2.0 / n)


@pytest.mark.parametrize("alpha", [1.2, 1.5, 1.8, 2.0])
def test_scales_sum_to_one_in_power_alpha(alpha):
    sde = LevyVPSDE(alpha)
    total = sde.mean_coeff(TIMES) ** alpha + sde.marginal_scale(TIMES) ** alpha
    torch.testing.assert_close(total, torch.ones_like(TIMES), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("alpha", [1.5, 2.0])
def test_beta_matches_finite_difference(alpha):
    sde = LevyVPSDE(alpha)
    t = torch.linspace(0.01, 0.98, 50, dtype=torch.float64)
    step = 1e-6
    # Central difference: truncation O(step**2 * |d^3 log a|) and rounding O(1e-16 / step).
    slope = (sde.log_mean_coeff(t + step) - sde.log_mean_coeff(t - step)) / (2.0 * step)
    torch.testing.assert_close(sde.beta(t), -alpha * slope, rtol=1e-6, atol=0.0)


def test_sde_coefficients_consistent_with_beta():
    sde = LevyVPSDE(1.7)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    x = torch.ones(3, 2, dtype=torch.float64)
    drift, diffusion = sde.sde(x, t)
    torch.testing.assert_close(drift, -(sde.beta(t) / 1.7)[:, None].expand(3, 2))
    torch.testing.assert_close(diffusion, sde.beta(t) ** (1.0 / 1.7))


def test_float32_scale_matches_float64_near_zero():
    sde = LevyVPSDE(1.8)
    t = torch.tensor([1e-5, 1e-4, 1e-3])
    torch.testing.assert_close(
        sde.marginal_scale(t).double(), sde.marginal_scale(t.double()), rtol=1e-5, atol=0.0
    )


# Training loss.


@pytest.mark.parametrize("alpha", [1.5, 2.0])
def test_loss_is_zero_for_oracle(alpha):
    sde = LevyVPSDE(alpha)
    center = torch.tensor([0.3, -1.2], dtype=torch.float64)
    x_start = center.expand(256, 2).clone()
    losses = lim_training_losses(
        point_mass_oracle(sde, center), x_start, sde, generator=torch.Generator().manual_seed(1)
    )
    assert losses.shape == (256,)
    # Float64 rounding of (x_t - a c)/sigma with sigma >= about 1e-4 stays below 1e-10.
    assert losses.max().item() < 1e-12


@pytest.mark.parametrize("alpha", [1.5, 2.0])
def test_loss_detects_wrong_target_scale(alpha):
    sde = LevyVPSDE(alpha)
    center = torch.tensor([0.3, -1.2], dtype=torch.float64)
    oracle = point_mass_oracle(sde, center)
    x_start = center.expand(256, 2).clone()
    doubled = lim_training_losses(
        lambda x, t: 2.0 * oracle(x, t), x_start, sde, generator=torch.Generator().manual_seed(1)
    )
    unscaled = lim_training_losses(
        lambda x, t: alpha * oracle(x, t), x_start, sde, generator=torch.Generator().manual_seed(1)
    )
    # Both errors equal |eps|/alpha times a constant, about 0.5 on average, far above 0.05.
    assert doubled.mean().item() > 0.05
    assert unscaled.mean().item() > 0.05


def test_loss_rejects_wrong_output_shape():
    sde = LevyVPSDE(1.8)
    with pytest.raises(ValueError, match="shape"):
        lim_training_losses(lambda x, t: x[:, :1], torch.zeros(4, 2), sde)


# Oracle samplers for data at a point.


def median_distance(samples: torch.Tensor, center: torch.Tensor) -> float:
    return (samples - center).norm(dim=1).median().item()


@pytest.mark.parametrize("alpha", ALPHAS)
def test_ode_sampler_converges_to_point(alpha):
    sde = LevyVPSDE(alpha)
    center = torch.tensor([1.0, -0.5], dtype=torch.float64)
    oracle = point_mass_oracle(sde, center)
    errors = []
    for steps in (10, 100, 1000):
        samples, history = lim_sample(
            oracle,
            (256, 2),
            sde,
            steps,
            deterministic=True,
            generator=torch.Generator().manual_seed(3),
            dtype=torch.float64,
            get_sample_history=True,
        )
        errors.append(median_distance(samples, center))

    assert errors[1] < errors[0] / 3.0
    assert errors[2] < errors[1] / 3.0
    # The last step freezes the score at t_{N-1} and leaves about (1 - 1/alpha) sigma(t_{N-1}) |e|
    # of the noise e = x_T / sigma(T); the bound allows the full sigma(t_{N-1}) |e|.
    last_scale = sde.marginal_scale(sde.time_grid(1000)[-2]).item()
    initial_noise = (
        history[0].norm(dim=1).median().item()
        / sde.marginal_scale(torch.tensor(sde.T, dtype=torch.float64)).item()
    )
    assert errors[2] < last_scale * initial_noise


@pytest.mark.parametrize("alpha", ALPHAS)
def test_sde_sampler_concentrates_at_point(alpha):
    sde = LevyVPSDE(alpha)
    center = torch.tensor([1.0, -0.5], dtype=torch.float64)
    oracle = point_mass_oracle(sde, center)
    errors = []
    for steps in (100, 1000):
        samples = lim_sample(
            oracle,
            (256, 2),
            sde,
            steps,
            generator=torch.Generator().manual_seed(4),
            dtype=torch.float64,
        )
        errors.append(median_distance(samples, center))

    assert errors[1] < errors[0] / 2.0
    # The last step injects an increment of scale about sigma(t_{N-1}) and keeps a fraction
    # |1 - 2/alpha| <= 1/3 of the earlier deviation, itself of the same order. The bound is three
    # times sigma(t_{N-1}) times the median norm of a 2-D unit-scale increment.
    increments = sample_sas(alpha, (4096, 2), generator=torch.Generator().manual_seed(9))
    last_scale = sde.marginal_scale(sde.time_grid(1000)[-2]).item()
    assert errors[1] < 3.0 * last_scale * increments.double().norm(dim=1).median().item()


@pytest.mark.parametrize("alpha", [1.5, 1.8])
def test_sde_sampler_keeps_forward_marginal(alpha):
    # For data at c the forward marginal at t is a(t) c + sigma(t) eps, so (x_t - a(t) c)/sigma(t)
    # along the reverse SDE must again be unit-scale stable. Compare medians of |.| in 1-D.
    sde = LevyVPSDE(alpha)
    center = torch.tensor([0.7], dtype=torch.float64)
    steps, n = 200, 4000
    _, history = lim_sample(
        point_mass_oracle(sde, center),
        (n, 1),
        sde,
        steps,
        generator=torch.Generator().manual_seed(5),
        clamp_eps=None,
        dtype=torch.float64,
        get_sample_history=True,
    )
    t = sde.time_grid(steps)[steps // 2]
    rescaled = (history[steps // 2] - sde.mean_coeff(t) * center) / sde.marginal_scale(t)
    reference = sample_sas(alpha, (200000, 1), generator=torch.Generator().manual_seed(6))
    ratio = rescaled.abs().median().item() / reference.abs().median().item()
    # The sample median of n = 4000 values has a relative standard deviation of about 0.02 for
    # these laws; 0.1 is five of them. The time discretization adds well under 0.01 at 200 steps.
    # With the drift weight alpha of the public LIM sampler the ratio is 1.6 at alpha 1.5.
    assert abs(ratio - 1.0) < 0.1


def test_sampler_history_shape_and_seed():
    sde = LevyVPSDE(1.7)
    oracle = point_mass_oracle(sde, torch.zeros(3))
    first, history = lim_sample(
        oracle, (8, 3), sde, 5, generator=torch.Generator().manual_seed(7), get_sample_history=True
    )
    second = lim_sample(oracle, (8, 3), sde, 5, generator=torch.Generator().manual_seed(7))
    assert history.shape == (6, 8, 3)
    torch.testing.assert_close(history[-1], first)
    torch.testing.assert_close(first, second)


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="alpha"):
        LevyVPSDE(2.5)
    with pytest.raises(ValueError, match="T"):
        LevyVPSDE(1.8, T=1.0)
    with pytest.raises(ValueError, match="reverse_steps"):
        lim_sample(lambda x, t: x, (2, 2), LevyVPSDE(1.8), 0)
    with pytest.raises(TypeError, match="reverse_steps"):
        lim_sample(lambda x, t: x, (2, 2), LevyVPSDE(1.8), 2.5)


# Training a small network.


class TinyMLP(torch.nn.Module):
    def __init__(self, dim: int = 2, hidden: int = 32) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(dim + 1, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, dim),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.cat([x, t[:, None]], dim=1))


def gaussian_mixture(n: int, generator: torch.Generator) -> torch.Tensor:
    centers = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    labels = torch.randint(0, 3, (n,), generator=generator)
    return centers[labels] + 0.2 * torch.randn(n, 2, generator=generator)


def test_training_lowers_loss():
    torch.manual_seed(0)
    sde = LevyVPSDE(1.8)
    net = TinyMLP()
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3)
    data_generator = torch.Generator().manual_seed(10)
    eval_data = gaussian_mixture(4096, torch.Generator().manual_seed(11))

    def eval_loss() -> float:
        # The same generator seed gives the same t and eps, so both evaluations are paired.
        with torch.no_grad():
            losses = lim_training_losses(
                net, eval_data, sde, generator=torch.Generator().manual_seed(12)
            )
        return losses.mean().item()

    before = eval_loss()
    for _ in range(200):
        loss = lim_training_losses(net, gaussian_mixture(128, data_generator), sde).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = eval_loss()

    # Measured on this seed: 0.344 before and 0.172 after training.
    assert after < 0.75 * before
