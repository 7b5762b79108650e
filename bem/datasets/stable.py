"""Alpha-stable noise in torch: the positive totally skewed variable ``A`` and ``eps = sqrt(A) G``.

Parameterization (scipy's default ``levy_stable``, S1 in Nolan's terms), for tail index
``alpha`` in (0, 2]:

- ``A ~ S(alpha/2, 1, 2*cos(pi*alpha/4)**(2/alpha), 0)``, with Laplace transform
  ``E[exp(-s*A)] = exp(-(2*s)**(alpha/2))``. At ``alpha = 2``, ``A == 2`` exactly.
- ``eps = sqrt(A) * G`` with ``G ~ N(0, I)`` is symmetric alpha-stable with characteristic
  function ``exp(-|u|**alpha)`` in each coordinate (scale 1); ``eps ~ N(0, 2 I)`` at alpha 2.

Sampling uses the Chambers-Mallows-Stuck representation (Chambers, Mallows and Stuck, 1976) for
the totally skewed case with ``a = alpha/2 < 1``. Writing ``V = pi * u`` with ``u ~ U(0, 1)`` and
``W ~ Exp(1)``, it reads

    A = 2 * sin(a V) / sin(V)**(1/a) * (sin((1 - a) V) / W)**((1 - a)/a),

which is the usual form with ``U = V - pi/2``. Each sine is evaluated as ``sin(pi * x)`` with
``x`` reflected into [0, 1/2] from both ``u`` and ``1 - u``, which are both exact in floating
point. The factors therefore stay accurate as ``alpha -> 2`` (``a -> 1``), where ``sin(a V)`` and
``sin(V)`` would otherwise lose their relative precision near ``V = pi``. Everything is computed
as a logarithm and exponentiated once.

Non-isotropic noise without a clamp on ``A`` skips ``A`` altogether: the symmetric
Chambers-Mallows-Stuck form gives each coordinate the same law as ``sqrt(A) G`` from two
uniforms, with no Gaussian draw.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "check_alpha",
    "sample_skewed_levy",
    "sample_sas",
    "sas_from_a",
    "skewed_levy_scale",
]

# Smallest uniform draw used, so that no logarithm receives 0. float32 uniforms are multiples of
# 2**-24, so this only replaces the exact zero draw.
_U_MIN = 2.0**-26

# Elements per chunk of a large non-isotropic draw: 64K float32 values are 256 KB per temporary.
_CHUNK = 1 << 16


def check_alpha(alpha: float) -> float:
    """Validate the tail index and return it as a float.

    Raises:
        ValueError: if ``alpha`` is not a number in (0, 2].
    """
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"alpha must be a number in (0, 2], got {alpha!r}") from None
    if not (0.0 < value <= 2.0) or math.isnan(value):
        raise ValueError(f"alpha must lie in (0, 2], got {alpha!r}; use 2 for Gaussian noise")
    if value < 1.0:
        warnings.warn(
            f"alpha={value} < 1: the noise has an infinite mean; the library is tested on [1, 2]",
            stacklevel=3,
        )
    return value


def skewed_levy_scale(alpha: float) -> float:
    """Return the S1 scale ``2*cos(pi*alpha/4)**(2/alpha)`` of ``A`` (for scipy comparisons)."""
    alpha = check_alpha(alpha)
    return 2.0 * math.cos(math.pi * alpha / 4.0) ** (2.0 / alpha)


def _as_size(size: int | Sequence[int] | torch.Size) -> tuple[int, ...]:
    if isinstance(size, int):
        size = (size,)
    size = tuple(int(n) for n in size)
    if any(n < 0 for n in size):
        raise ValueError(f"size must contain non-negative integers, got {size}")
    return size


def _uniform(
    size: tuple[int, ...], generator: torch.Generator | None, device, dtype
) -> torch.Tensor:
    return torch.rand(size, generator=generator, device=device, dtype=dtype)


def _log_sin_pi(c: float, u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Return ``log(sin(pi * c * u))`` for ``c`` in (0, 1], given ``w = 1 - u``.

    ``sin(pi x) = sin(pi (1 - x))`` and ``1 - c u = (1 - c) + c w`` is exact to rounding, so the
    argument is reflected into [0, 1/2] without cancellation.
    """
    x = u * c
    x_reflected = w * c + (1.0 - c)
    return torch.sin(torch.minimum(x, x_reflected).mul_(math.pi)).log_()


def _log_skewed_levy(
    alpha: float, size: tuple[int, ...], generator: torch.Generator | None, device, dtype
) -> torch.Tensor:
    """Return ``log A`` for ``alpha < 2`` (Chambers-Mallows-Stuck, see the module docstring)."""
    a = alpha / 2.0
    u = _uniform(size, generator, device, dtype).clamp_(min=_U_MIN)
    w_u = 1.0 - u
    # W ~ Exp(1) as -log(U): several times faster than Tensor.exponential_ on CPU.
    log_w = _uniform(size, generator, device, dtype).clamp_(min=_U_MIN).log_().neg_().log_()

    log_a = _log_sin_pi(a, u, w_u)
    log_a.sub_(_log_sin_pi(1.0, u, w_u), alpha=1.0 / a)
    tail = _log_sin_pi(1.0 - a, u, w_u).sub_(log_w)
    log_a.add_(tail, alpha=(1.0 - a) / a)
    return log_a.add_(math.log(2.0))


def _symmetric_stable(
    alpha: float, size: tuple[int, ...], generator: torch.Generator | None, device, dtype
) -> torch.Tensor:
    """Draw symmetric stable variables with characteristic function ``exp(-|u|**alpha)``.

    Chambers-Mallows-Stuck with ``beta = 0`` and ``U = pi (u - 1/2)``:
    ``X = sin(alpha U) / cos(U)**(1/alpha) * (cos((1 - alpha) U) / W)**((1 - alpha)/alpha)``.
    With ``m = min(u, 1 - u)``, ``cos(U) = sin(pi m)`` and
    ``|sin(alpha U)| = sin(pi (1 - alpha/2 + alpha m))``, so both factors keep their relative
    precision near ``U = +-pi/2`` (the tail) for alpha close to 2 (alpha < 2 here).
    """
    u = _uniform(size, generator, device, dtype).clamp_(min=_U_MIN)
    m = torch.minimum(u, 1.0 - u)
    w = _uniform(size, generator, device, dtype).clamp_(min=_U_MIN).log_().neg_()

    # |sin(alpha U)| = sin(pi (alpha/2 - alpha m)) = sin(pi (1 - alpha/2 + alpha m)); the second
    # argument is exact near m = 0, where the factor is smallest relative to its rounding error.
    sin_alpha_u = m.mul(alpha * math.pi).add_((1.0 - alpha / 2.0) * math.pi).sin_()
    cos_rest = m.mul(-(alpha - 1.0) * math.pi).add_((alpha - 1.0) * math.pi / 2.0).cos_()
    cos_u = m.mul_(math.pi).sin_()  # last use of m, so it may be overwritten

    log_magnitude = cos_rest.div_(w).log_().mul_((1.0 - alpha) / alpha)
    log_magnitude.sub_(cos_u.log_(), alpha=1.0 / alpha)
    return torch.copysign(sin_alpha_u.mul_(log_magnitude.exp_()), u.sub_(0.5))


def _chunked(draw, alpha: float, size: tuple[int, ...], generator, device, dtype) -> torch.Tensor:
    """Call ``draw`` on flat chunks of at most ``_CHUNK`` elements and fill one output tensor.

    The draw makes a dozen elementwise passes over several temporaries. On the CPU, chunks keep
    them in cache instead of streaming each pass through memory (5.5 to 4.9 times the cost of
    ``torch.randn`` for 256 x 1 x 32 x 32). Other devices draw in one piece.
    """
    numel = math.prod(size)
    if numel <= _CHUNK or torch.device(device or "cpu").type != "cpu":
        return draw(alpha, size, generator, device, dtype)
    out = torch.empty(numel, device=device, dtype=dtype)
    for start in range(0, numel, _CHUNK):
        stop = min(start + _CHUNK, numel)
        out[start:stop] = draw(alpha, (stop - start,), generator, device, dtype)
    return out.view(size)


def sample_skewed_levy(
    alpha: float,
    size: int | Sequence[int] | torch.Size,
    *,
    clamp_a: float | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw the positive totally skewed stable variable ``A``.

    Args:
        alpha: tail index in (0, 2]; ``A ~ S(alpha/2, 1, 2*cos(pi*alpha/4)**(2/alpha), 0)``.
        size: output shape.
        clamp_a: if given, clip ``A`` to ``[0, clamp_a]``.
        generator: optional ``torch.Generator`` for a reproducible draw (on ``device``).
        device, dtype: where and in which floating type to sample.

    Returns:
        Tensor of shape ``size``; exactly 2 everywhere when ``alpha == 2``.
    """
    alpha = check_alpha(alpha)
    size = _as_size(size)
    if alpha == 2.0:
        out = torch.full(size, 2.0, device=device, dtype=dtype)
    else:
        out = _log_skewed_levy(alpha, size, generator, device, dtype).exp_()
    if clamp_a is not None:
        out.clamp_(max=float(clamp_a))
    return out


def sas_from_a(
    a: torch.Tensor,
    size: int | Sequence[int] | torch.Size,
    *,
    clamp_eps: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return ``eps = sqrt(A) * G`` for given ``A`` and fresh Gaussian ``G`` of shape ``size``.

    ``a`` must broadcast to ``size``: shape ``(B, 1, ..., 1)`` gives isotropic noise without a
    full-size copy of ``A``.
    """
    size = _as_size(size)
    eps = torch.randn(size, generator=generator, device=a.device, dtype=a.dtype)
    eps.mul_(a.sqrt())
    if clamp_eps is not None:
        eps.clamp_(-float(clamp_eps), float(clamp_eps))
    return eps


def sample_sas(
    alpha: float,
    size: int | Sequence[int] | torch.Size,
    *,
    isotropic: bool = True,
    clamp_a: float | None = None,
    clamp_eps: float | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Draw symmetric alpha-stable noise ``eps = sqrt(A) * G``.

    Args:
        alpha: tail index in (0, 2]; each coordinate has characteristic function
            ``exp(-|u|**alpha)``.
        size: output shape ``(B, ...)``.
        isotropic: one ``A`` per batch element ``size[0]``, shared by all its coordinates (a
            sub-Gaussian stable vector); otherwise one ``A`` per coordinate (independent
            coordinates).
        clamp_a: clip ``A`` to ``[0, clamp_a]`` before multiplying.
        clamp_eps: clip ``eps`` to ``[-clamp_eps, clamp_eps]``.
        generator: optional ``torch.Generator`` for a reproducible draw (on ``device``).
        device, dtype: where and in which floating type to sample.

    Returns:
        Tensor of shape ``size``.
    """
    alpha = check_alpha(alpha)
    size = _as_size(size)
    if len(size) == 0:
        raise ValueError("size must have at least one dimension (the batch)")

    if isotropic or alpha == 2.0:
        # One A per batch element: O(B) work, broadcast as a (B, 1, ..., 1) view.
        a_shape = (size[0],) + (1,) * (len(size) - 1)
        a = sample_skewed_levy(
            alpha, a_shape, clamp_a=clamp_a, generator=generator, device=device, dtype=dtype
        )
        return sas_from_a(a, size, clamp_eps=clamp_eps, generator=generator)

    if clamp_a is None:
        # Same law per coordinate as sqrt(A) G, from two uniforms and no Gaussian draw.
        eps = _chunked(_symmetric_stable, alpha, size, generator, device, dtype)
    else:
        # Clamping A needs A itself: eps = exp(log(A)/2) * G folds the square root into exp.
        half_log_a = _log_skewed_levy(alpha, size, generator, device, dtype)
        half_log_a.clamp_(max=math.log(float(clamp_a))).mul_(0.5).exp_()
        eps = torch.randn(size, generator=generator, device=device, dtype=dtype)
        eps.mul_(half_log_a)
    if clamp_eps is not None:
        eps.clamp_(-float(clamp_eps), float(clamp_eps))
    return eps
