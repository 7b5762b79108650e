"""Training losses and samplers of GenerativeLevyProcess, with oracle networks for point masses."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import levy_stable
from torch import nn

import bem.datasets.stable as stable
from dlpm.methods.dlpm import cosine_alpha_bar
from dlpm.methods.GenerativeLevyProcess import GenerativeLevyProcess, LossOptions, lp_loss

POINT = torch.tensor([0.3, -0.7])


class PointMassOracle(nn.Module):
    """Exact eps for data that is a point mass at ``POINT``: (x_t - gamma_bar_t c) / sigma_bar_t.

    It reads the time input tau = t/T and evaluates the cosine schedule in closed form, so it is
    independent of the process's schedule tensors.
    """

    def __init__(self, alpha: float, point: torch.Tensor = POINT) -> None:
        super().__init__()
        self.alpha = alpha
        self.point = point

    def forward(self, x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        alphabar = cosine_alpha_bar(tau.double()).reshape(-1, *([1] * (x.ndim - 1)))
        gamma_bar = alphabar ** (1 / self.alpha)
        sigma_bar = (1 - alphabar) ** (1 / self.alpha)
        point = self.point.double().reshape(1, -1, *([1] * (x.ndim - 2)))
        return ((x.double() - gamma_bar * point) / sigma_bar).to(x.dtype)


class TinyMLP(nn.Module):
    def __init__(self, dim: int = 2, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim + 1, width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, dim),
        )

    def forward(self, x, tau):
        return self.net(torch.cat([x, tau[:, None]], dim=1))


@pytest.mark.parametrize("alpha", [1.5, 1.8, 2.0])
@pytest.mark.parametrize("isotropic", [True, False])
@pytest.mark.parametrize("reverse_steps", [100, 30])
@pytest.mark.parametrize("deterministic", [False, True])
def test_oracle_samplers_return_the_point(alpha, isotropic, reverse_steps, deterministic):
    process = GenerativeLevyProcess(alpha, "cpu", 100, isotropic=isotropic)
    samples = process.sample(
        {"default": PointMassOracle(alpha)},
        (256, 2),
        reverse_steps,
        deterministic=deterministic,
        generator=torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(samples, POINT.expand(256, 2), rtol=0, atol=1e-5)


@pytest.mark.parametrize("alpha", [1.5, 2.0])
def test_oracle_dlim_keeps_eps_fixed_along_the_path(alpha):
    # With the exact eps, DLIM moves x_t along gamma_bar_t c + sigma_bar_t eps_init exactly.
    process = GenerativeLevyProcess(alpha, "cpu", 50)
    _, history = process.sample(
        {"default": PointMassOracle(alpha)}, (64, 2), deterministic=True, get_sample_history=True
    )
    schedule = process.dlpm.schedule_float64
    # The oracle's eps at the first step; x_{T-1} itself carries no gamma_bar_{T-1} c term.
    eps_init = (history[0].double() - schedule.gamma_bar[-1] * POINT.double()) / schedule.sigma_bar[
        -1
    ]
    for k in range(1, history.shape[0] - 1):
        t = 49 - k
        expected = schedule.gamma_bar[t] * POINT.double() + schedule.sigma_bar[t] * eps_init
        torch.testing.assert_close(history[k].double(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("isotropic", [True, False])
def test_oracle_dlpm_keeps_alpha_stable_marginals(isotropic):
    # Conditioned on A_{1:T}, each DLPM step maps N(0, Sigma_t) to N(0, Sigma_{t-1}) around
    # gamma_bar_t c, so (x_t - gamma_bar_t c) / sigma_bar_t stays SaS(alpha) at every step.
    alpha, n = 1.6, 8000
    process = GenerativeLevyProcess(alpha, "cpu", 40, isotropic=isotropic)
    _, history = process.sample(
        {"default": PointMassOracle(alpha)},
        (n, 2),
        get_sample_history=True,
        generator=torch.Generator().manual_seed(1),
    )
    schedule = process.dlpm.schedule_float64
    grid = np.array([-10, -3, -1, -0.3, 0, 0.4, 1.2, 4, 12.0])
    exact = levy_stable.cdf(grid, alpha, 0.0)
    bound = math.sqrt(math.log(2 / 1e-6) / (2 * n))  # DKW, failure probability 1e-6
    for t in (39, 25, 10, 3):
        state = history[39 - t].double()
        eps = ((state - schedule.gamma_bar[t] * POINT.double()) / schedule.sigma_bar[t])[
            :, 0
        ].numpy()
        empirical = (eps[:, None] <= grid).mean(0)
        assert np.abs(empirical - exact).max() < bound, t


def test_dlim_with_eta_returns_requested_shape_and_point():
    process = GenerativeLevyProcess(1.7, "cpu", 60, isotropic=False)
    samples = process.sample(
        {"default": PointMassOracle(1.7)}, (32, 2), 20, deterministic=True, dlim_eta=0.5
    )
    assert samples.shape == (32, 2)
    torch.testing.assert_close(samples, POINT.expand(32, 2), rtol=0, atol=1e-5)


def test_deterministic_sampling_draws_no_a_sequence(monkeypatch):
    calls = []
    original = stable.sample_skewed_levy

    def counting(alpha, size, **kwargs):
        calls.append(tuple(size))
        return original(alpha, size, **kwargs)

    monkeypatch.setattr(stable, "sample_skewed_levy", counting)
    monkeypatch.setattr("dlpm.methods.dlpm.sample_skewed_levy", counting)
    process = GenerativeLevyProcess(1.7, "cpu", 100)
    process.sample({"default": PointMassOracle(1.7)}, (16, 2), deterministic=True)
    # Only the initial eps: one A per example.
    assert calls == [(16, 1)]


def test_sampling_with_fewer_steps_leaves_the_process_unchanged():
    process = GenerativeLevyProcess(1.7, "cpu", 100)
    before = {
        name: getattr(process.dlpm, name).clone()
        for name in ("gamma", "gamma_bar", "sigma", "sigma_bar")
    }
    process.sample({"default": PointMassOracle(1.7)}, (8, 2), reverse_steps=50)
    assert process.reverse_steps == 100
    for name, values in before.items():
        assert torch.equal(getattr(process.dlpm, name), values)


def test_fewer_steps_without_rescaled_timesteps_raises():
    process = GenerativeLevyProcess(1.7, "cpu", 100, rescale_timesteps=False)
    with pytest.raises(ValueError, match="rescale_timesteps"):
        process.sample({"default": PointMassOracle(1.7)}, (8, 2), reverse_steps=50)


def test_sampling_restores_train_mode():
    net = TinyMLP()
    net.train()
    GenerativeLevyProcess(1.7, "cpu", 10).sample({"default": net}, (4, 2))
    assert net.training


def test_clip_denoised_bounds_the_samples():
    process = GenerativeLevyProcess(1.7, "cpu", 30)
    oracle = PointMassOracle(1.7, point=torch.tensor([3.0, -3.0]))
    samples = process.sample({"default": oracle}, (16, 2), clip_denoised=True)
    torch.testing.assert_close(samples, torch.tensor([1.0, -1.0]).expand(16, 2), rtol=0, atol=1e-5)


def test_seeding_torch_alone_reproduces_loss_and_sample():
    process = GenerativeLevyProcess(1.7, "cpu", 50)
    outputs = []
    for _ in range(2):
        torch.manual_seed(123)
        net = TinyMLP()
        x_start = torch.randn(32, 2)
        loss = process.training_losses({"default": net}, x_start)["loss"]
        sample = process.sample({"default": net}, (8, 2))
        outputs.append((loss.detach(), sample))
        np.random.seed(None)  # numpy's global state must not matter
    assert torch.equal(outputs[0][0], outputs[1][0])
    assert torch.equal(outputs[0][1], outputs[1][1])


def test_training_losses_with_default_arguments():
    process = GenerativeLevyProcess(1.7, "cpu", 100)
    result = process.training_losses({"default": TinyMLP()}, torch.randn(16, 2))
    assert set(result) == {"loss"}
    assert result["loss"].ndim == 0
    assert torch.isfinite(result["loss"])


@pytest.mark.parametrize("lploss", [2.0, 1.0, -1.0, 1.5, 3.0])
@pytest.mark.parametrize("monte_carlo", ["mean", "median"])
def test_every_lploss_gives_a_finite_differentiable_loss(lploss, monte_carlo):
    process = GenerativeLevyProcess(1.7, "cpu", 100, isotropic=False)
    net = TinyMLP()
    loss = process.training_losses(
        {"default": net},
        torch.randn(8, 2),
        lploss=lploss,
        loss_monte_carlo=monte_carlo,
        monte_carlo_outer=3,
        monte_carlo_inner=2,
    )["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_lp_loss_values():
    d = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    torch.testing.assert_close(lp_loss(d, 2), torch.tensor([math.sqrt(12.5), 0.0]))
    torch.testing.assert_close(lp_loss(d, -1), torch.tensor([12.5, 0.0]))
    torch.testing.assert_close(lp_loss(d, 1), torch.tensor([3.0, 0.0]))  # smooth L1: |d| - 1/2
    torch.testing.assert_close(lp_loss(d, 3), torch.tensor([((27 + 64) / 2) ** (1 / 3), 0.0]))


def test_median_of_means_shapes_and_value(monkeypatch):
    # The reduction receives (outer, inner, B): check it with a network whose error is known.
    process = GenerativeLevyProcess(2.0, "cpu", 20)

    class Zero(nn.Module):
        def forward(self, x, tau):
            return torch.zeros_like(x)

    # At alpha 2, eps = sqrt(2) z; the mean-square loss of a zero prediction is 2 E[z**2] = 2.
    n = 4000
    loss = process.training_losses(
        {"default": Zero()},
        torch.zeros(n, 1),
        lploss=-1,
        loss_monte_carlo="median",
        monte_carlo_outer=5,
        monte_carlo_inner=4,
        generator=torch.Generator().manual_seed(0),
    )["loss"]
    # Each inner mean of 4 squares of N(0, 2) has mean 2; the median of 5 such means is biased
    # low (chi-square skew): E ~ 1.8. The batch mean of n medians has standard error < 0.03.
    assert 1.5 < loss.item() < 2.0


def test_unknown_training_option_raises():
    process = GenerativeLevyProcess(1.7, "cpu", 10)
    with pytest.raises(TypeError, match="lp_loss"):
        process.training_losses({"default": TinyMLP()}, torch.randn(4, 2), lp_loss=2)
    with pytest.raises(ValueError, match="loss_monte_carlo"):
        LossOptions(loss_monte_carlo="mode")
    with pytest.raises(ValueError, match="lploss"):
        LossOptions(lploss=0)


def test_unsupported_types_raise_not_implemented():
    with pytest.raises(NotImplementedError, match="EPSILON"):
        GenerativeLevyProcess(1.7, "cpu", 10, model_mean_type="START_X")
    with pytest.raises(NotImplementedError, match="FIXED"):
        GenerativeLevyProcess(1.7, "cpu", 10, model_var_type="LEARNED")


def test_tiny_mlp_loss_decreases_on_2d_data():
    torch.manual_seed(0)
    process = GenerativeLevyProcess(1.7, "cpu", 100)
    net = TinyMLP()
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    centers = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    losses = []
    for _ in range(300):
        x_start = centers[torch.randint(0, 2, (256,))] + 0.05 * torch.randn(256, 2)
        loss = process.training_losses({"default": net}, x_start)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # Compare means over 50 steps: the loss is noisy (heavy-tailed targets).
    assert np.mean(losses[-50:]) < 0.8 * np.mean(losses[:50])


def test_lim_facade_trains_and_samples():
    torch.manual_seed(0)
    process = GenerativeLevyProcess(1.8, "cpu", 50, LIM=True, clamp_eps=20.0)
    assert process.LIM
    net = TinyMLP()
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    centers = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    losses = []
    for _ in range(200):
        x_start = centers[torch.randint(0, 2, (256,))] + 0.05 * torch.randn(256, 2)
        loss = process.training_losses({"default": net}, x_start)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-40:]) < 0.8 * np.mean(losses[:40])
    for deterministic in (False, True):
        samples, history = process.sample(
            {"default": net}, (64, 2), 20, deterministic=deterministic, get_sample_history=True
        )
        assert samples.shape == (64, 2)
        assert history.shape == (21, 64, 2)
        assert torch.isfinite(samples).all()


def test_lim_rejects_dlpm_only_sampling_options():
    process = GenerativeLevyProcess(1.8, "cpu", 20, LIM=True)
    with pytest.raises(ValueError, match="DLPM only"):
        process.sample({"default": TinyMLP()}, (4, 2), clip_denoised=True)
