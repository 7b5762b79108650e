"""Sampling loops for DLPM (stochastic, conditioned on ``A_{1:T}``) and DLIM (``eta >= 0``).

Each sampler is a function of an ``eps_fn(x_t, t) -> eps`` callable, a ``DLPM`` chain and the
output shape. The loop bodies follow DLPM section 4 step by step. Extra memory does not grow with
the number of steps T:

- isotropic noise keeps ``A_{0:T-1}`` and ``Sigma_{0:T-1}`` as ``(T, B)`` tensors;
- non-isotropic noise never stores the full-size ``A_t``: each ``A_t`` is drawn from its own
  generator seeded with ``base_seed + t``, so it can be drawn again. A forward pass accumulates
  ``Sigma_{T-1}``, and the reverse loop recovers ``Sigma_{t-1} = (Sigma_t - sigma_t**2 A_t) /
  gamma_t**2`` in float64, redrawing ``A_t``. The subtraction loses precision only where
  ``A_t`` dominates ``Sigma_t`` (``Sigma_{t-1}`` smaller than about 1e-12 ``Sigma_t``); there the
  step's ``Gamma_t`` is within rounding of 1 anyway, and negative results are clamped to 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from bem.datasets.stable import sas_from_a
from dlpm.methods.dlpm import DLPM

EpsFunction = Callable[[torch.Tensor, int], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor], None]

__all__ = ["sample_dlim", "sample_dlpm"]


def _per_batch(values: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshape a ``(B,)`` tensor to ``(B, 1, ..., 1)`` of rank ``ndim``."""
    return values.reshape(values.shape + (1,) * (ndim - values.ndim))


def _step_seeds(generator: torch.Generator | None, device: torch.device) -> int:
    """Draw a base seed from ``generator`` (or torch's global state) for per-step generators."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=gen_device).item())


def _step_generator(base_seed: int, t: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(base_seed + t)


def _initial_state(
    dlpm: DLPM,
    shape: tuple[int, ...],
    sigma_last_var: torch.Tensor,
    clamp_eps: float | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Return ``x_{T-1} = sqrt(Sigma_{T-1}) z``, which is ``sigma_bar_{T-1} eps`` with ``eps``
    alpha-stable and consistent with the drawn ``A`` path; ``clamp_eps`` clips that ``eps``."""
    sigma_bar_last = dlpm.schedule_float64.sigma_bar[-1].item()
    a_equivalent = (sigma_last_var / sigma_bar_last**2).to(dlpm.dtype)
    eps = sas_from_a(a_equivalent, shape, clamp_eps=clamp_eps, generator=generator)
    return sigma_bar_last * eps


def sample_dlpm(
    eps_fn: EpsFunction,
    dlpm: DLPM,
    shape: tuple[int, ...],
    *,
    clamp_a: float | None = None,
    clamp_eps: float | None = None,
    generator: torch.Generator | None = None,
    history: bool = False,
    progress: bool = False,
    callback: StepCallback | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the stochastic DLPM sampler (DLPM section 4, conditioned on ``A_{1:T}``).

    Args:
        eps_fn: noise predictor ``eps_fn(x_t, t)`` for an integer step ``t`` of ``dlpm``.
        dlpm: the chain; its ``diffusion_steps`` is the number of reverse steps.
        shape: output shape ``(B, ...)``.
        clamp_a, clamp_eps: clamps of the drawn ``A_t`` and of the initial ``eps``.
        generator: optional ``torch.Generator`` on ``dlpm.device``.
        history: also return every state ``x_{T-1}, ..., x_0`` stacked, shape ``(T, *shape)``.
        progress: show a tqdm bar.
        callback: called as ``callback(t, x_{t-1})`` after each step.

    Returns:
        ``(x_0, history or None)``.
    """
    shape = tuple(shape)
    steps = dlpm.diffusion_steps
    device = dlpm.device
    ndim = len(shape)
    per_coordinate = not (dlpm.isotropic or dlpm.gaussian)

    if per_coordinate:
        base_seed = _step_seeds(generator, device)

        def a_at(t: int) -> torch.Tensor:
            return dlpm.draw_a(
                shape, clamp_a=clamp_a, generator=_step_generator(base_seed, t, device)
            )

        gamma_sq = (dlpm.schedule_float64.gamma**2).tolist()
        sigma_sq = (dlpm.schedule_float64.sigma**2).tolist()
        sigma_var = torch.zeros(shape, device=device, dtype=torch.float64)
        for t in range(steps):
            sigma_var.mul_(gamma_sq[t]).add_(a_at(t).double(), alpha=sigma_sq[t])
    else:
        a_path = dlpm.draw_a((steps, shape[0]), clamp_a=clamp_a, generator=generator)
        sigma_path = dlpm.sigma_recursion(a_path)
        sigma_var = _per_batch(sigma_path[-1], ndim)

    x = _initial_state(dlpm, shape, sigma_var, clamp_eps, generator)
    states = [x] if history else None

    for t in tqdm(range(steps - 1, 0, -1), disable=not progress, desc="DLPM sampling"):
        if per_coordinate:
            sigma_t_var = sigma_var
            sigma_prev_var = torch.sub(sigma_t_var, a_at(t).double(), alpha=sigma_sq[t])
            sigma_prev_var.div_(gamma_sq[t]).clamp_(min=0.0)
        else:
            sigma_prev_var = _per_batch(sigma_path[t - 1], ndim)
            sigma_t_var = _per_batch(sigma_path[t], ndim)

        eps = eps_fn(x, t)
        z = None
        if t > 1:
            z = torch.randn(shape, generator=generator, device=device, dtype=x.dtype)
        x = dlpm.dlpm_step(x, t, eps, sigma_prev_var, sigma_t_var, z)

        if per_coordinate:
            sigma_var = sigma_prev_var
        if states is not None:
            states.append(x)
        if callback is not None:
            callback(t, x)

    return x, (torch.stack(states) if states is not None else None)


def sample_dlim(
    eps_fn: EpsFunction,
    dlpm: DLPM,
    shape: tuple[int, ...],
    *,
    eta: float = 0.0,
    clamp_a: float | None = None,
    clamp_eps: float | None = None,
    generator: torch.Generator | None = None,
    history: bool = False,
    progress: bool = False,
    callback: StepCallback | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the DLIM sampler: deterministic for ``eta = 0``, alpha-stable noise for ``eta > 0``.

    With ``eta = 0`` the only random draw is the initial ``eps``: no ``A`` sequence is drawn.
    Arguments and return value as for :func:`sample_dlpm`.
    """
    shape = tuple(shape)
    steps = dlpm.diffusion_steps
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"dlim_eta must lie in [0, 1], got {eta}")

    _, eps = dlpm.draw_noise(shape, clamp_a=clamp_a, clamp_eps=clamp_eps, generator=generator)
    x = dlpm.schedule_float64.sigma_bar[-1].item() * eps
    states = [x] if history else None

    for t in tqdm(range(steps - 1, 0, -1), disable=not progress, desc="DLIM sampling"):
        eps = eps_fn(x, t)
        noise = None
        if eta > 0:
            _, noise = dlpm.draw_noise(
                shape, clamp_a=clamp_a, clamp_eps=clamp_eps, generator=generator
            )
        x = dlpm.dlim_step(x, t, eps, eta, noise)
        if states is not None:
            states.append(x)
        if callback is not None:
            callback(t, x)

    return x, (torch.stack(states) if states is not None else None)
