"""Levy-Ito model (LIM): a variance-preserving SDE driven by an alpha-stable Levy process.

Model: Yoon, Park, Kim and Lim, "Score-based Generative Models with Levy Processes", NeurIPS 2023.
The formulas below are derived in this docstring from the Fokker-Planck equation of the SDE. The
discretized updates match the public LIM sampler, except for the reverse SDE weight ``k`` below.

Notation (code name: symbol, meaning):

- ``alpha``: tail index of the isotropic alpha-stable Levy process ``L``, whose increment over a
  time ``h`` has characteristic function ``exp(-h |u|**alpha)``.
- ``mean_coeff(t)``: ``a(t)`` with the cosine schedule
  ``log a(t) = log cos(((t + s)/(1 + s)) pi/2) - log cos((s/(1 + s)) pi/2)``.
- ``beta(t)``: ``-alpha d log a(t)/dt = alpha pi/(2 (1 + s)) tan(((t + s)/(1 + s)) pi/2)``.
- ``diffusion(t)``: ``g(t) = beta(t)**(1/alpha)``, the coefficient of ``dL``.
- ``marginal_scale(t)``: ``sigma(t) = (1 - a(t)**alpha)**(1/alpha)``.
- ``noise``: ``eps``, symmetric alpha-stable with characteristic function ``exp(-|u|**alpha)`` per
  coordinate, so ``eps ~ N(0, 2 I)`` at alpha 2.
- ``output``: the network output ``net(x_t, t)``, trained towards ``-eps/alpha``.

Forward SDE and marginal. ``dX_t = -beta(t)/alpha X_t dt + g(t) dL_t`` gives
``X_t = a(t) X_0 + sigma(t) eps``: the stochastic integral ``int_0^t a(t)/a(r) g(r) dL_r`` is
stable with scale**alpha ``int_0^t (a(t)/a(r))**alpha beta(r) dr = 1 - a(t)**alpha``.

Fractional score. With ``S(x, t) = (-Laplacian)**((alpha - 2)/2) grad p_t(x) / p_t(x)`` (the
Fourier multiplier ``|u|**(alpha - 2)`` applied to ``grad p_t``), the Fokker-Planck equation reads
``d p_t/dt = -div((f - beta S) p_t)`` with drift ``f(x, t) = -beta(t)/alpha x``, because
``-(-Laplacian)**(alpha/2) p = div(S p)``. For ``X_t = a x_0 + sigma eps`` given ``x_0`` the
fractional score is ``-(x - a x_0)/(alpha sigma**alpha) = -eps/(alpha sigma**(alpha - 1))``, and the
operator is linear, so fractional denoising score matching trains
``output = net(x_t, t) ~ E[-eps/alpha | x_t] = sigma(t)**(alpha - 1) S(x_t, t)``.
At alpha 2, ``S`` is the ordinary score ``grad log p_t``. With non-isotropic noise (independent
stable coordinates) the fractional Laplacian acts on each coordinate, and every formula here holds
coordinate by coordinate.

Reverse dynamics, written in forward time ``t`` and integrated from ``T`` down to ``t_min``:

- probability-flow ODE: ``dx/dt = f(x, t) - beta(t) S(x, t)``;
- reverse SDE: ``dx = [f(x, t) - k beta(t) S(x, t)] dt + g(t) dL``, whose marginals equal the
  forward ones for ``k = 2`` (the Fokker-Planck equation of the reversed process).

Each step from ``s`` to ``t < s`` solves the linear drift exactly and holds ``S`` at its value at
``s`` (an exponential integrator). With ``r = a(t)/a(s)``:

- ODE: ``x_t = r x_s + alpha (r - 1) S_s``;
- SDE: ``x_t = r x_s + k alpha (r - 1) S_s + (r**alpha - 1)**(1/alpha) xi``, with ``xi``
  unit-scale stable.

To first order in ``h = s - t`` these are the Euler(-Maruyama) steps ``r - 1 ~ beta h/alpha`` and
noise scale ``(beta h)**(1/alpha)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bem.datasets.stable import check_alpha, sample_sas

logger = logging.getLogger(__name__)

__all__ = ["LevyVPSDE", "lim_training_losses", "lim_sample"]

# The public LIM code limits its stable draws to magnitude 20. Here that is a clip of eps.
DEFAULT_CLAMP_EPS = 20.0

# Weight k in the reverse SDE drift f - k beta S. The value 2 keeps the forward marginals.
EXACT_SCORE_WEIGHT = 2.0

Network = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _per_example(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View per-example values of shape ``(B,)`` as ``(B, 1, ..., 1)`` in the dtype of ``x``."""
    if values.ndim != 1 or values.shape[0] != x.shape[0]:
        raise ValueError(
            f"expected per-example values of shape ({x.shape[0]},), got {tuple(values.shape)}"
        )
    return values.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))


class LevyVPSDE:
    """Variance-preserving SDE driven by an isotropic alpha-stable Levy process (cosine schedule).

    Follows the SDE contract of score_sde: marginal coefficients at ``t``, prior sampling and
    reverse ODE and SDE steps. Coefficients are computed in float64 and returned in the dtype of
    the time tensor, because ``1 - a(t)**alpha`` cancels badly in float32 near ``t = 0``.

    Args:
        alpha: tail index in (0, 2].
        s: offset of the cosine schedule.
        T: end time of the forward process; ``a(T)`` is about 0.0084 for the defaults.
        t_min: smallest time used by training and sampling (``a(t)`` is 1 at ``t = 0``).
    """

    def __init__(
        self, alpha: float, *, s: float = 0.008, T: float = 0.9946, t_min: float = 1e-5
    ) -> None:
        self.alpha = check_alpha(alpha)
        if not s > 0.0:
            raise ValueError(f"s must be positive, got {s!r}")
        if not 0.0 < t_min < T < 1.0:
            raise ValueError(
                f"times must satisfy 0 < t_min < T < 1, got t_min={t_min!r}, T={T!r}; "
                "the cosine schedule reaches a(t) = 0 at t = 1"
            )
        self.s = float(s)
        self.T = float(T)
        self.t_min = float(t_min)
        self._log_cos_start = math.log(math.cos(self.s / (1.0 + self.s) * math.pi / 2.0))

    def __repr__(self) -> str:
        return f"LevyVPSDE(alpha={self.alpha}, s={self.s}, T={self.T}, t_min={self.t_min})"

    def _angle(self, t: torch.Tensor) -> torch.Tensor:
        return (t.double() + self.s) / (1.0 + self.s) * (math.pi / 2.0)

    def log_mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        """Return ``log a(t)`` of the cosine schedule, with the shape and dtype of ``t``."""
        return (torch.cos(self._angle(t)).log() - self._log_cos_start).to(t.dtype)

    def mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        """Return ``a(t)``, the factor of ``x_0`` in the marginal."""
        return torch.exp(self.log_mean_coeff(t.double())).to(t.dtype)

    def marginal_scale(self, t: torch.Tensor) -> torch.Tensor:
        """Return ``sigma(t) = (1 - a(t)**alpha)**(1/alpha)``, the scale of the noise in ``x_t``."""
        log_a = self.log_mean_coeff(t.double())
        scale_pow_alpha = -torch.expm1(self.alpha * log_a)
        return scale_pow_alpha.pow(1.0 / self.alpha).to(t.dtype)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """Return ``beta(t) = -alpha d log a(t)/dt``, so the drift is ``-beta(t)/alpha x``."""
        rate = self.alpha * math.pi / (2.0 * (1.0 + self.s))
        return (rate * torch.tan(self._angle(t))).to(t.dtype)

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """Return ``g(t) = beta(t)**(1/alpha)``, the coefficient of the Levy increment ``dL``."""
        return self.beta(t.double()).pow(1.0 / self.alpha).to(t.dtype)

    def sde(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the drift ``-beta(t)/alpha x`` (shape of ``x``) and ``g(t)`` (shape ``(B,)``)."""
        drift = -_per_example(self.beta(t.double()) / self.alpha, x) * x
        return drift, self.diffusion(t)

    def marginal(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Return ``x_t = a(t) x_start + sigma(t) noise``.

        Args:
            x_start: data ``x_0``, shape ``(B, ...)``.
            t: times, shape ``(B,)``.
            noise: unit-scale stable ``eps``, shape of ``x_start``.
        """
        mean = _per_example(self.mean_coeff(t.double()), x_start) * x_start
        return mean + _per_example(self.marginal_scale(t.double()), x_start) * noise

    def noise_to_output(self, noise: torch.Tensor) -> torch.Tensor:
        """Return the training target ``-noise/alpha`` of the network (``-noise/2`` at alpha 2)."""
        return noise / -self.alpha

    def output_to_score(self, output: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Return the fractional score ``S = output / sigma(t)**(alpha - 1)``."""
        scale = self.marginal_scale(t.double()).pow(self.alpha - 1.0)
        return output / _per_example(scale, output)

    def prior_sampling(
        self,
        shape: Sequence[int],
        *,
        generator: torch.Generator | None = None,
        isotropic: bool = True,
        clamp_a: float | None = None,
        clamp_eps: float | None = DEFAULT_CLAMP_EPS,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Draw ``x_T = sigma(T) eps``, the marginal at ``T`` of the point mass at 0.

        ``a(T)`` is about 0.0084 for the defaults, so this is close to any marginal at ``T``.
        ``clamp_a`` and ``clamp_eps`` clip the draw of ``eps`` as in ``sample_sas``.
        """
        noise = sample_sas(
            self.alpha,
            tuple(shape),
            isotropic=isotropic,
            clamp_a=clamp_a,
            clamp_eps=clamp_eps,
            generator=generator,
            device=device,
            dtype=dtype,
        )
        t_end = torch.full((noise.shape[0],), self.T, dtype=torch.float64, device=noise.device)
        return _per_example(self.marginal_scale(t_end), noise) * noise

    def time_grid(
        self, reverse_steps: int, *, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Return ``reverse_steps + 1`` evenly spaced float64 times from ``T`` down to ``t_min``."""
        if isinstance(reverse_steps, bool) or not isinstance(reverse_steps, int):
            raise TypeError(f"reverse_steps must be an int, got {reverse_steps!r}")
        if reverse_steps < 1:
            raise ValueError(f"reverse_steps must be at least 1, got {reverse_steps}")
        return torch.linspace(
            self.T, self.t_min, reverse_steps + 1, dtype=torch.float64, device=device
        )

    def _step_coefficients(
        self, s: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(r, r - 1, r**alpha - 1, sigma(s))`` in float64 for a step from ``s`` to ``t``.

        ``r = a(t)/a(s)``, and ``expm1`` keeps ``r - 1`` accurate for short steps.
        """
        log_ratio = self.log_mean_coeff(t.double()) - self.log_mean_coeff(s.double())
        return (
            log_ratio.exp(),
            torch.expm1(log_ratio),
            torch.expm1(self.alpha * log_ratio),
            self.marginal_scale(s.double()),
        )

    def reverse_ode_step(
        self, x: torch.Tensor, output: torch.Tensor, s: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """Take one probability-flow ODE step from ``s`` to ``t < s``.

        ``x_t = r x_s + alpha (r - 1) S_s`` with ``r = a(t)/a(s)`` and ``S_s`` the fractional score.

        Args:
            x: state at time ``s``, shape ``(B, ...)``.
            output: ``net(x, s)``, the approximation of ``sigma(s)**(alpha - 1) S(x, s)``.
            s, t: current and next times, shape ``(B,)``, ``t < s``.

        Returns:
            The state at time ``t``, shape of ``x``.
        """
        ratio, ratio_minus_one, _, scale_s = self._step_coefficients(s, t)
        output_coeff = self.alpha * ratio_minus_one / scale_s.pow(self.alpha - 1.0)
        return _per_example(ratio, x) * x + _per_example(output_coeff, x) * output

    def reverse_sde_step(
        self,
        x: torch.Tensor,
        output: torch.Tensor,
        s: torch.Tensor,
        t: torch.Tensor,
        increment: torch.Tensor,
        *,
        score_weight: float = EXACT_SCORE_WEIGHT,
    ) -> torch.Tensor:
        """Take one reverse SDE step from ``s`` to ``t < s``.

        ``x_t = r x_s + k alpha (r - 1) S_s + (r**alpha - 1)**(1/alpha) increment`` with
        ``r = a(t)/a(s)``, ``S_s`` the fractional score and ``k = score_weight``.

        Args:
            x: state at time ``s``, shape ``(B, ...)``.
            output: ``net(x, s)``, the approximation of ``sigma(s)**(alpha - 1) S(x, s)``.
            s, t: current and next times, shape ``(B,)``.
            increment: unit-scale stable noise ``xi``, shape of ``x``.
            score_weight: ``k`` in the drift ``f - k beta S``. 2 keeps the forward marginals
                (module docstring); other values change the law of the samples for alpha < 2.

        Returns:
            The state at time ``t``, shape of ``x``.
        """
        # NOTE: the public LIM sampler uses k = alpha (its score factor is alpha**2 (r - 1)). That
        # equals 2 only at alpha 2, and for alpha < 2 it widens the reverse marginals.
        ratio, ratio_minus_one, ratio_pow_minus_one, scale_s = self._step_coefficients(s, t)
        output_coeff = score_weight * self.alpha * ratio_minus_one / scale_s.pow(self.alpha - 1.0)
        noise_coeff = ratio_pow_minus_one.pow(1.0 / self.alpha)
        drift_part = _per_example(ratio, x) * x + _per_example(output_coeff, x) * output
        return drift_part + _per_example(noise_coeff, x) * increment


def _check_output(output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if output.shape != x.shape:
        raise ValueError(
            f"net(x_t, t) must return the shape of x_t {tuple(x.shape)}, got {tuple(output.shape)}"
        )
    return output


def lim_training_losses(
    net: Network,
    x_start: torch.Tensor,
    sde: LevyVPSDE,
    *,
    generator: torch.Generator | None = None,
    isotropic: bool = True,
    clamp_a: float | None = None,
    clamp_eps: float | None = DEFAULT_CLAMP_EPS,
) -> torch.Tensor:
    """Compute the LIM fractional denoising score matching loss, one value per example.

    Draws ``t ~ U(t_min, T)`` and ``eps`` unit-scale stable, forms
    ``x_t = a(t) x_start + sigma(t) eps`` and compares ``net(x_t, t)`` with ``-eps/alpha`` under
    the smooth L1 loss (PyTorch's default ``beta = 1``), averaged over the non-batch coordinates.
    The minimizer of the squared loss would be ``sigma(t)**(alpha - 1) S(x_t, t)`` (module
    docstring); the smooth L1 loss is the choice of LIM.

    Args:
        net: called as ``net(x_t, t)``, returns a tensor of the shape of ``x_t``. ``t`` is a float
            tensor of shape ``(B,)`` in ``[t_min, T]``, the LIM time itself, already in [0, 1).
        x_start: data batch ``x_0``, shape ``(B, ...)``.
        sde: the forward process.
        generator: optional ``torch.Generator`` for ``t`` and ``eps``.
        isotropic: one heavy-tailed factor per example shared by its coordinates (see
            ``sample_sas``); otherwise independent coordinates.
        clamp_a: clip of the positive factor ``A`` of ``eps = sqrt(A) G``; None for no clip.
        clamp_eps: clip of the training noise ``eps`` (and so of the target) to
            ``[-clamp_eps, clamp_eps]``; LIM uses 20, None for no clip.

    Returns:
        Tensor of shape ``(B,)``; the reduction over the batch is the caller's.
    """
    if x_start.ndim < 1 or x_start.shape[0] == 0:
        raise ValueError(
            f"x_start must have a non-empty batch dimension, got {tuple(x_start.shape)}"
        )
    batch = x_start.shape[0]
    uniform = torch.rand(batch, generator=generator, device=x_start.device, dtype=torch.float64)
    t = sde.t_min + (sde.T - sde.t_min) * uniform

    noise = sample_sas(
        sde.alpha,
        x_start.shape,
        isotropic=isotropic,
        clamp_a=clamp_a,
        clamp_eps=clamp_eps,
        generator=generator,
        device=x_start.device,
        dtype=x_start.dtype,
    )
    x_t = sde.marginal(x_start, t, noise)

    output = _check_output(net(x_t, t.to(x_start.dtype)), x_t)
    target = sde.noise_to_output(noise)
    per_element = F.smooth_l1_loss(output, target, reduction="none")
    return per_element.reshape(batch, -1).mean(dim=1)


def _default_device(net: Network) -> torch.device:
    """Return the device of the first parameter of ``net``, or the CPU when it has none."""
    if isinstance(net, torch.nn.Module):
        for parameter in net.parameters():
            return parameter.device
    return torch.device("cpu")


@torch.no_grad()
def lim_sample(
    net: Network,
    shape: Sequence[int],
    sde: LevyVPSDE,
    reverse_steps: int,
    *,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
    isotropic: bool = True,
    clamp_a: float | None = None,
    clamp_eps: float | None = DEFAULT_CLAMP_EPS,
    score_weight: float = EXACT_SCORE_WEIGHT,
    get_sample_history: bool = False,
    progress: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Generate samples by integrating the reverse LIM dynamics from ``T`` down to ``t_min``.

    The time grid has ``reverse_steps + 1`` uniformly spaced points, so the network is called
    ``reverse_steps`` times. The network output is read as
    ``net(x, t) ~ sigma(t)**(alpha - 1) S(x, t)``, the minimizer of the training loss of
    ``lim_training_losses`` (derivation in the module docstring). At alpha 2 this is
    ``-z/sqrt(2)`` for the standard normal ``z`` of DDPM, because ``eps = sqrt(2) z`` there.

    Args:
        net: called as ``net(x, t)`` with ``t`` of shape ``(B,)`` in ``[t_min, T]``.
        shape: output shape ``(B, ...)``.
        sde: the forward process.
        reverse_steps: number of steps, at least 1.
        deterministic: use the probability-flow ODE step instead of the reverse SDE step.
        generator: optional ``torch.Generator`` for the prior draw and the increments.
        isotropic: one heavy-tailed factor per example in each draw (see ``sample_sas``).
        clamp_a: clip of the factor ``A`` in the prior draw and in every increment.
        clamp_eps: clip of the unit-scale prior draw and of every unit-scale increment ``xi`` to
            ``[-clamp_eps, clamp_eps]`` before scaling; LIM uses 20, None for no clip.
        score_weight: ``k`` of the reverse SDE (``reverse_sde_step``); unused by the ODE.
        get_sample_history: also return every state, shape ``(reverse_steps + 1, *shape)``.
        progress: show a tqdm progress bar.
        device: where to sample; None takes the device of the first parameter of ``net``.
        dtype: floating type of the samples.

    Returns:
        Samples of shape ``shape``, or ``(samples, history)`` when ``get_sample_history``.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) == 0 or shape[0] == 0:
        raise ValueError(f"shape must start with a non-zero batch size, got {shape}")
    if device is None:
        device = _default_device(net)
    times = sde.time_grid(reverse_steps, device=device)
    draw_options = {
        "isotropic": isotropic,
        "clamp_a": clamp_a,
        "clamp_eps": clamp_eps,
        "generator": generator,
    }

    logger.debug(
        "LIM sampling: shape %s, %d steps, deterministic=%s", shape, reverse_steps, deterministic
    )
    x = sde.prior_sampling(shape, device=device, dtype=dtype, **draw_options)
    history = [x] if get_sample_history else None
    ones = torch.ones(shape[0], dtype=torch.float64, device=device)

    for step in tqdm(range(reverse_steps), disable=not progress, desc="LIM sampling"):
        s, t = ones * times[step], ones * times[step + 1]
        output = _check_output(net(x, s.to(dtype)), x)

        if deterministic:
            x = sde.reverse_ode_step(x, output, s, t)
        else:
            increment = sample_sas(sde.alpha, shape, device=device, dtype=dtype, **draw_options)
            x = sde.reverse_sde_step(x, output, s, t, increment, score_weight=score_weight)

        if history is not None:
            history.append(x)

    if history is not None:
        return x, torch.stack(history)
    return x
