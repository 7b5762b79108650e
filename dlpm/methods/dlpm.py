"""Denoising Levy Probabilistic Models: schedules, forward process, loss elements, reverse steps.

Shariatian, Simsekli and Durmus, "Denoising Levy Probabilistic Models", ICLR 2025.

Notation (code name: paper symbol, meaning). Time is discrete, ``t = 0 .. T-1``, and ``t = 0`` is
the data end of the chain.

- ``alpha``: the tail index of the alpha-stable noise, in (0, 2].
- ``gamma[t]``: gamma_t, the one-step scale, ``x_t = gamma_t x_{t-1} + sigma_t eps_t``.
- ``sigma[t]``: sigma_t, the one-step noise scale.
- ``gamma_bar[t]``, ``sigma_bar[t]``: the marginal scales,
  ``x_t = gamma_bar_t x_0 + sigma_bar_t eps`` with ``eps`` symmetric alpha-stable.
- ``A``: the positive totally skewed stable variable with ``eps = sqrt(A) z``, ``z ~ N(0, I)``.
- ``Sigma[t]``: Sigma_t, the Gaussian variance of ``x_t`` given ``x_0`` and ``A_{0:t}``,
  ``Sigma_t = sigma_t**2 A_t + gamma_t**2 Sigma_{t-1}``.
- ``Gamma``: Gamma_t ``= 1 - gamma_t**2 Sigma_{t-1} / Sigma_t``, the share of ``Sigma_t`` that
  step ``t`` added.
- ``cosine_alpha_bar``: the Gaussian cosine schedule of Nichol and Dhariwal (2021), named so that it
  cannot be confused with the tail index.

Everything here is pure: schedules are built once in float64 and cast, and no method keeps
sampling state. The sampling loops live in ``dlpm.methods.samplers``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bem.datasets.stable import check_alpha, sample_skewed_levy, sas_from_a

__all__ = [
    "DLPM",
    "Schedule",
    "broadcast_to_batch",
    "cosine_alpha_bar",
    "scale_exploding_schedule",
    "scale_preserving_schedule",
]

SCALES = ("scale_preserving", "scale_exploding")
TIME_SPACINGS = ("linear", "quadratic")

# Cosine schedule offset (Nichol and Dhariwal 2021, eq. 17) and EDM's noise grid (Karras et al.
# 2022, eq. 5), the two schedule families of the DLPM paper.
COSINE_OFFSET = 0.008
EDM_SIGMA_MIN = 0.002
EDM_SIGMA_MAX = 80.0
EDM_RHO = 7.0


@dataclass(frozen=True)
class Schedule:
    """The four per-step scale tensors of a DLPM chain, each of shape ``(T,)``."""

    gamma: torch.Tensor
    gamma_bar: torch.Tensor
    sigma: torch.Tensor
    sigma_bar: torch.Tensor

    @property
    def steps(self) -> int:
        return int(self.gamma.shape[0])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """Return a copy on ``device`` with floating type ``dtype``."""
        return Schedule(
            *(
                v.to(device=device, dtype=dtype)
                for v in (self.gamma, self.gamma_bar, self.sigma, self.sigma_bar)
            )
        )


def _time_grid(steps: int, time_spacing: str, *, endpoint: bool) -> torch.Tensor:
    """Return ``steps`` points of [0, 1) (or [0, 1] with ``endpoint``) in float64."""
    if time_spacing not in TIME_SPACINGS:
        raise ValueError(f"time_spacing must be one of {TIME_SPACINGS}, got {time_spacing!r}")
    denominator = max(steps - 1, 1) if endpoint else steps
    grid = torch.arange(steps, dtype=torch.float64) / denominator
    return grid if time_spacing == "linear" else grid**2


def cosine_alpha_bar(tau: torch.Tensor, s: float = COSINE_OFFSET) -> torch.Tensor:
    """Return the cosine schedule ``f(tau)/f(0)``, ``f(tau) = cos((tau + s)/(1 + s) * pi/2)**2``.

    ``tau`` is continuous time in [0, 1] (Nichol and Dhariwal 2021, eq. 17).
    """
    f = torch.cos((tau + s) / (1 + s) * math.pi / 2) ** 2
    f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
    return f / f0


def scale_preserving_schedule(alpha: float, steps: int, time_spacing: str = "linear") -> Schedule:
    """Build the scale-preserving cosine schedule in float64.

    ``a_t = abar_t / abar_{t-1}`` (with ``abar_{-1} = abar_0 = 1``), ``gamma_t = a_t**(1/alpha)``,
    ``sigma_t = (1 - gamma_t**alpha)**(1/alpha)``, and the products telescope to
    ``gamma_bar_t = abar_t**(1/alpha)``, so ``gamma_bar**alpha + sigma_bar**alpha == 1``.
    """
    abar = cosine_alpha_bar(_time_grid(steps, time_spacing, endpoint=False))
    abar_prev = torch.cat([abar[:1], abar[:-1]])
    one_step = abar / abar_prev
    gamma = one_step ** (1 / alpha)
    sigma = (1 - one_step).clamp_min(0) ** (1 / alpha)
    gamma_bar = torch.cumprod(gamma, 0)
    sigma_bar = (1 - gamma_bar**alpha).clamp_min(0) ** (1 / alpha)
    return Schedule(gamma, gamma_bar, sigma, sigma_bar)


def scale_exploding_schedule(alpha: float, steps: int, time_spacing: str = "linear") -> Schedule:
    """Build the scale-exploding schedule in float64: ``gamma = gamma_bar = 1``.

    ``sigma_bar`` follows EDM's grid from ``sigma_min`` at ``t = 0`` to ``sigma_max`` at
    ``t = T-1`` (Karras et al. 2022, eq. 5), and ``sigma_t**alpha`` is the increment of
    ``sigma_bar**alpha`` (with ``sigma_0 = sigma_bar_0``), so that the alpha-stable scales add up.
    """
    tau = _time_grid(steps, time_spacing, endpoint=True)
    lo, hi = EDM_SIGMA_MIN ** (1 / EDM_RHO), EDM_SIGMA_MAX ** (1 / EDM_RHO)
    sigma_bar = (lo + tau * (hi - lo)) ** EDM_RHO
    increments = torch.diff(sigma_bar**alpha, prepend=torch.zeros(1, dtype=torch.float64))
    sigma = increments.clamp_min(0) ** (1 / alpha)
    ones = torch.ones(steps, dtype=torch.float64)
    return Schedule(ones, ones.clone(), sigma, sigma_bar)


def broadcast_to_batch(values: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Index a per-step tensor at ``t`` and return a ``(B, 1, ..., 1)`` view of rank ``ndim``.

    Args:
        values: shape ``(T,)`` (schedules) or ``(T, B)`` and ``(T, B, ...)`` (per-path values,
            then ``t`` is one step for the whole batch).
        t: integer steps of shape ``(B,)``, or a scalar step.
        ndim: rank of the data tensor the result multiplies.
    """
    if values.ndim == 1:
        picked = values[t]
    else:
        picked = values[int(t)]
    if picked.ndim > ndim:
        raise ValueError(f"cannot broadcast a rank-{picked.ndim} value over rank-{ndim} data")
    return picked.reshape(picked.shape + (1,) * (ndim - picked.ndim))


class DLPM:
    """The DLPM chain with ``T = diffusion_steps`` steps: schedules and one-step math.

    Args:
        alpha: tail index in (0, 2].
        device: where the schedule tensors live.
        diffusion_steps: number of steps T.
        time_spacing: ``'linear'`` or ``'quadratic'`` placement of the steps in time.
        isotropic: one ``A`` per batch element (sub-Gaussian stable noise) or one per coordinate.
        clamp_a, clamp_eps: default clamps of ``A`` and ``eps`` (``None``: no clamp).
        scale: ``'scale_preserving'`` (cosine) or ``'scale_exploding'`` (EDM grid).
        gaussian: replace ``A`` by 1 and force alpha 2, which gives the unit-variance Gaussian
            DDPM of Ho et al. (2020) with the cosine schedule (DLPM at alpha 2 has ``A = 2``).
        dtype: floating type of the schedules.
    """

    def __init__(
        self,
        alpha: float,
        device: torch.device | str | None,
        diffusion_steps: int,
        time_spacing: str = "linear",
        isotropic: bool = True,
        clamp_a: float | None = None,
        clamp_eps: float | None = None,
        scale: str = "scale_preserving",
        gaussian: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.alpha = 2.0 if gaussian else check_alpha(alpha)
        if int(diffusion_steps) != diffusion_steps or diffusion_steps < 2:
            raise ValueError(f"diffusion_steps must be an integer >= 2, got {diffusion_steps!r}")
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
        if time_spacing not in TIME_SPACINGS:
            raise ValueError(f"time_spacing must be one of {TIME_SPACINGS}, got {time_spacing!r}")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.diffusion_steps = int(diffusion_steps)
        self.time_spacing = time_spacing
        self.isotropic = bool(isotropic)
        self.clamp_a = clamp_a
        self.clamp_eps = clamp_eps
        self.scale = scale
        self.gaussian = bool(gaussian)
        self.dtype = dtype

        build = (
            scale_preserving_schedule if scale == "scale_preserving" else scale_exploding_schedule
        )
        self.schedule_float64 = build(self.alpha, self.diffusion_steps, time_spacing)
        self.schedule = self.schedule_float64.to(self.device, dtype)

    # Schedule tensors under the paper's names, shape (T,).
    @property
    def gamma(self) -> torch.Tensor:
        return self.schedule.gamma

    @property
    def gamma_bar(self) -> torch.Tensor:
        return self.schedule.gamma_bar

    @property
    def sigma(self) -> torch.Tensor:
        return self.schedule.sigma

    @property
    def sigma_bar(self) -> torch.Tensor:
        return self.schedule.sigma_bar

    def rebuild(self, diffusion_steps: int) -> DLPM:
        """Return a new chain with ``diffusion_steps`` steps and every other setting kept."""
        return DLPM(
            self.alpha,
            self.device,
            diffusion_steps,
            time_spacing=self.time_spacing,
            isotropic=self.isotropic,
            clamp_a=self.clamp_a,
            clamp_eps=self.clamp_eps,
            scale=self.scale,
            gaussian=self.gaussian,
            dtype=self.dtype,
        )

    def a_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of ``A`` for data of ``shape``: ``(B, 1, ..., 1)`` if isotropic, else ``shape``."""
        if self.isotropic or self.gaussian:
            return (shape[0],) + (1,) * (len(shape) - 1)
        return tuple(shape)

    def draw_a(
        self,
        shape: tuple[int, ...],
        *,
        clamp_a: float | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """Draw ``A`` of exactly ``shape`` (ones for the Gaussian baseline)."""
        dtype = dtype or self.dtype
        if self.gaussian:
            return torch.ones(shape, device=self.device, dtype=dtype)
        return sample_skewed_levy(
            self.alpha, shape, clamp_a=clamp_a, generator=generator, device=self.device, dtype=dtype
        )

    def draw_noise(
        self,
        shape: tuple[int, ...],
        *,
        clamp_a: float | None = None,
        clamp_eps: float | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``(A, eps)`` with ``eps = sqrt(A) z``; ``A`` has shape ``a_shape(shape)``."""
        a = self.draw_a(self.a_shape(tuple(shape)), clamp_a=clamp_a, generator=generator)
        eps = sas_from_a(a, shape, clamp_eps=clamp_eps, generator=generator)
        return a, eps

    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Sample ``q(x_t | x_0)``: ``x_t = gamma_bar_t x_0 + sigma_bar_t eps`` (DLPM eq. 3)."""
        gamma_bar = broadcast_to_batch(self.gamma_bar, t, x_start.ndim)
        sigma_bar = broadcast_to_batch(self.sigma_bar, t, x_start.ndim)
        return gamma_bar * x_start + sigma_bar * eps

    def predict_x_start(
        self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor
    ) -> torch.Tensor:
        """Invert the marginal: ``x_0 = (x_t - sigma_bar_t eps) / gamma_bar_t``."""
        gamma_bar = broadcast_to_batch(self.gamma_bar, t, x_t.ndim)
        sigma_bar = broadcast_to_batch(self.sigma_bar, t, x_t.ndim)
        return (x_t - sigma_bar * eps) / gamma_bar

    def eps_from_x_start(
        self, x_t: torch.Tensor, t: torch.Tensor, x_start: torch.Tensor
    ) -> torch.Tensor:
        """Return ``eps = (x_t - gamma_bar_t x_0) / sigma_bar_t``."""
        gamma_bar = broadcast_to_batch(self.gamma_bar, t, x_t.ndim)
        sigma_bar = broadcast_to_batch(self.sigma_bar, t, x_t.ndim)
        return (x_t - gamma_bar * x_start) / sigma_bar

    def loss_elements(
        self, x_start: torch.Tensor, t: torch.Tensor, a: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(x_t, eps_t)`` for the one-variable DLPM loss (DLPM section 3).

        Given ``A_t``, ``x_t = gamma_bar_t x_0 + sqrt(A_t) sigma_bar_t z`` is Gaussian with
        variance ``Sigma'_t = A_t sigma_bar_t**2``, and the regression target is
        ``eps_t = (x_t - gamma_bar_t x_0) / sigma_bar_t = sqrt(A_t) z``.

        Args:
            x_start: data ``x_0``, shape ``(B, ...)``.
            t: integer steps, shape ``(B,)``.
            a: ``A_t`` broadcastable to ``x_start`` (``(B, 1, ..., 1)`` or ``x_start.shape``).
            z: standard Gaussian of ``x_start.shape``.
        """
        eps = z * a.sqrt()
        return self.q_sample(x_start, t, eps), eps

    def anterior_mean_variance(
        self,
        x_start: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        a_prev: torch.Tensor,
        a_t: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the mean and variance of ``x_{t-1}`` given ``x_t``, ``x_0``, ``A_{t-1}``, ``A_t``.

        The two-variable form of the DLPM loss: ``x_{t-1}`` has the marginal variance
        ``Sigma_{t-1} = sigma_bar_{t-1}**2 A_{t-1}`` and
        ``x_t = gamma_t x_{t-1} + sigma_t sqrt(A_t) z``, so
        ``Sigma_t = gamma_t**2 Sigma_{t-1} + sigma_t**2 A_t`` and the Gaussian posterior is

            m_tilde = gamma_bar_{t-1} x_0 + gamma_t Sigma_{t-1} / Sigma_t (x_t - gamma_bar_t x_0)
            Sigma_tilde = Sigma_{t-1} sigma_t**2 A_t / Sigma_t.

        At alpha 2 (``A = 2``) this is DDPM's posterior with every variance doubled.
        ``t`` must be at least 1.
        """
        ndim = x_start.ndim
        gamma = broadcast_to_batch(self.gamma, t, ndim)
        sigma = broadcast_to_batch(self.sigma, t, ndim)
        gamma_bar = broadcast_to_batch(self.gamma_bar, t, ndim)
        gamma_bar_prev = broadcast_to_batch(self.gamma_bar, t - 1, ndim)
        sigma_bar_prev = broadcast_to_batch(self.sigma_bar, t - 1, ndim)

        sigma_prev_var = sigma_bar_prev**2 * a_prev
        sigma_t_var = gamma**2 * sigma_prev_var + sigma**2 * a_t
        mean = gamma_bar_prev * x_start + gamma * sigma_prev_var / sigma_t_var * (
            x_t - gamma_bar * x_start
        )
        variance = sigma_prev_var * sigma**2 * a_t / sigma_t_var
        return mean, variance

    def sigma_recursion(self, a: torch.Tensor) -> torch.Tensor:
        """Return ``Sigma_{0:T-1}`` from ``A_{0:T-1}`` (first dimension T), in float64.

        ``Sigma_0 = sigma_0**2 A_0`` and ``Sigma_t = sigma_t**2 A_t + gamma_t**2 Sigma_{t-1}``
        (DLPM section 4). With isotropic noise ``a`` has shape ``(T, B)``.
        """
        gamma_sq = self.schedule_float64.gamma.to(a.device) ** 2
        sigma_sq = self.schedule_float64.sigma.to(a.device) ** 2
        a = a.to(torch.float64)
        out = torch.empty_like(a)
        running = torch.zeros_like(a[0])
        for t in range(a.shape[0]):
            running = sigma_sq[t] * a[t] + gamma_sq[t] * running
            out[t] = running
        return out

    def dlpm_step(
        self,
        x_t: torch.Tensor,
        t: int,
        eps_pred: torch.Tensor,
        sigma_prev_var: torch.Tensor,
        sigma_t_var: torch.Tensor,
        z: torch.Tensor | None,
    ) -> torch.Tensor:
        """Take one stochastic DLPM step from ``x_t`` to ``x_{t-1}``, conditioned on ``A_{1:T}``.

        ``Gamma_t = 1 - gamma_t**2 Sigma_{t-1} / Sigma_t`` and
        ``x_{t-1} = (x_t - sigma_bar_t Gamma_t eps) / gamma_t + sqrt(Gamma_t Sigma_{t-1}) z``
        (DLPM section 4). ``z = None`` gives the mean (the last step adds no noise).
        ``sigma_prev_var`` and ``sigma_t_var`` broadcast to ``x_t`` and may be float64.
        """
        gamma = self.schedule_float64.gamma[t].item()
        sigma_bar = self.schedule_float64.sigma_bar[t].item()
        share = gamma**2 * sigma_prev_var / sigma_t_var.clamp_min(torch.finfo(torch.float64).tiny)
        big_gamma = (1.0 - share).clamp_(0.0, 1.0)
        x_prev = (x_t - (sigma_bar * big_gamma).to(x_t.dtype) * eps_pred) / gamma
        if z is not None:
            x_prev = x_prev + (big_gamma * sigma_prev_var).sqrt().to(x_t.dtype) * z
        return x_prev

    def dlim_step(
        self,
        x_t: torch.Tensor,
        t: int,
        eps_pred: torch.Tensor,
        eta: float = 0.0,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Take one DLIM step from ``x_t`` to ``x_{t-1}`` (deterministic when ``eta = 0``).

        ``x_{t-1} = (x_t - sigma_bar_t eps) / gamma_t + c eps + eta sigma_bar_{t-1} noise`` with
        ``c = (sigma_bar_{t-1}**alpha - (eta sigma_bar_{t-1})**alpha)**(1/alpha)`` and
        ``noise = sqrt(A_t) z`` alpha-stable, so that the scales of ``eps`` and ``noise`` add up
        to ``sigma_bar_{t-1}`` in the alpha-stable sense (DLPM section 4).
        """
        gamma = self.schedule_float64.gamma[t].item()
        sigma_bar = self.schedule_float64.sigma_bar[t].item()
        sigma_bar_prev = self.schedule_float64.sigma_bar[t - 1].item()
        if eta < 0 or eta > 1:
            raise ValueError(f"dlim_eta must lie in [0, 1], got {eta}")
        x_start_scaled = (x_t - sigma_bar * eps_pred) / gamma
        if eta == 0:
            return x_start_scaled + sigma_bar_prev * eps_pred
        coefficient = max(sigma_bar_prev**self.alpha * (1.0 - eta**self.alpha), 0.0) ** (
            1 / self.alpha
        )
        if noise is None:
            raise ValueError("dlim_step with eta > 0 needs the alpha-stable noise sqrt(A_t) z")
        return x_start_scaled + coefficient * eps_pred + (eta * sigma_bar_prev) * noise
