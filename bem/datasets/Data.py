"""Synthetic 2D data sets and the alpha-stable noise generator behind one ``Generator`` class.

Distributions (``Generator.available_distributions``):

``gmm_2``
    Two Gaussians with means ``(-theta, 0)`` and ``(theta, 0)``, standard deviation ``std`` per
    coordinate, mixture weights ``weights`` (default equal).
``gmm_grid``
    ``n_mixture = m * m`` Gaussians whose means form an ``m x m`` grid of spacing ``theta``,
    centred at the origin, standard deviation ``std``. With the defaults (``n_mixture = 9``,
    ``std = 0.05``, ``theta = 1``) and no ``weights``, the weights are ``GRID_9_WEIGHTS``
    (0.01 to 0.3), the class-imbalance experiment of the DLPM paper (Shariatian, Simsekli and
    Durmus, ICLR 2025). Other grid sizes default to equal weights.
``swiss_roll``
    The 2D spiral ``(t cos t, t sin t) / SWISS_ROLL_SCALE`` with ``t ~ U(1.5 pi, 4.5 pi)``, plus
    Gaussian noise of standard deviation ``std`` added after the scaling.
``sas``
    ``std * eps`` where ``eps`` is symmetric alpha-stable with characteristic function
    ``exp(-|u|**alpha)`` per coordinate (``bem.datasets.stable.sample_sas``), so each
    coordinate follows ``scipy.stats.levy_stable(alpha, 0, scale=std)``. ``std = None`` (the
    default) means scale 1: this is the noise generator the diffusion methods use. As a data
    set, ``std = 0.05``, ``data_alpha = 1.7`` and ``isotropic = True`` give the heavy-tail
    experiment of the DLPM paper. At ``alpha = 2`` the coordinates are ``N(0, 2 std**2)``.
``sas_grid``
    The ``gmm_grid`` layout with alpha-stable instead of Gaussian components: each point is its
    grid centre plus ``std * eps`` with ``eps`` as in ``sas``.
``skewed_levy``
    ``std * A`` with ``A ~ S(alpha/2, 1, 2*cos(pi*alpha/4)**(2/alpha), 0)`` positive
    (``bem.datasets.stable.sample_skewed_levy``); ``isotropic`` draws one ``A`` per element of
    ``size[0]`` and repeats it over the other dimensions. ``std = None`` means scale 1.

Post-processing, applied in this order to the drawn points ``x`` of shape ``(n, d)``:

1. ``quantile_cutoff = q < 1``: draws ``ceil(n / q)`` points and keeps the ``n`` of smallest
   Euclidean norm, in their drawn order. This drops the points whose norm exceeds the empirical
   ``q``-quantile of the norms of the draw. ``q = 1`` (the default) keeps everything.
2. ``normalized``: standardises each coordinate, ``(x - mean) / std`` with the mean and the
   (unbiased) standard deviation of this sample over its ``n`` points.
3. ``between_minus_1_1``: divides by ``max |x|`` over all points and coordinates, a single scalar,
   so the result lies in ``[-1, 1]``, keeps its aspect ratio and keeps 0 at 0. Combine with
   ``quantile_cutoff`` for heavy-tailed data, or the bulk collapses to a few pixels.

Post-processing applies to the 2D data sets only, not to ``skewed_levy``. Randomness comes only
from the ``torch.Generator`` passed to ``generate`` (torch's global generator when it is None).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch

from bem.datasets.stable import check_alpha, sample_sas, sample_skewed_levy

logger = logging.getLogger(__name__)

__all__ = ["Generator", "GRID_9_WEIGHTS", "SWISS_ROLL_SCALE"]

# Weights of the 3x3 grid in row-major order of the grid centres (row = first coordinate):
# from 0.01 to 0.3, summing to 1. The DLPM authors' released 2D config uses these weights.
GRID_9_WEIGHTS = (0.01, 0.1, 0.3, 0.2, 0.02, 0.15, 0.02, 0.15, 0.05)

# The spiral radius t runs over [1.5 pi, 4.5 pi]: dividing by 7 gives coordinates of standard
# deviation 0.95 and 0.99 and mean 0.29 and 0.03 (measured on 10^6 points without noise).
SWISS_ROLL_SCALE = 7.0

_MIXTURES = ("gmm_2", "gmm_grid", "sas_grid")
_TWO_D = ("gmm_2", "gmm_grid", "swiss_roll", "sas", "sas_grid")
_STABLE = ("sas", "sas_grid", "skewed_levy")

_DEFAULT_STD = {
    "gmm_2": 0.05,
    "gmm_grid": 0.05,
    "swiss_roll": 0.05,
    "sas_grid": 0.05,
    "sas": None,
    "skewed_levy": None,
}

_PARAMETERS = (
    "nsamples",
    "std",
    "theta",
    "n_mixture",
    "weights",
    "data_alpha",
    "alpha",
    "isotropic",
    "normalized",
    "between_minus_1_1",
    "quantile_cutoff",
    "clamp_a",
    "clamp_eps",
    "device",
    "dtype",
)

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16}


class Generator:
    """Sampler for one named distribution, configured once by keyword parameters.

    Args:
        name: one of ``available_distributions``.
        nsamples: default number of points when ``generate`` gets no ``size`` (default 20000).
        std: scale of each component, see the module docstring; None takes the per-distribution
            default (0.05 for the Gaussian mixtures, the swiss roll and ``sas_grid``, 1 for
            ``sas`` and ``skewed_levy``).
        theta: half-distance between the two ``gmm_2`` means, grid spacing of ``gmm_grid`` and
            ``sas_grid`` (default 1).
        n_mixture: number of grid components, a perfect square (default 9).
        weights: mixture weights, non-negative, summing to 1 (within 1e-4, then renormalised).
        data_alpha: tail index in (0, 2] of ``sas``, ``sas_grid`` and ``skewed_levy``
            (default 1.7). ``alpha`` is accepted as another name for it.
        isotropic: one positive stable factor ``A`` per point shared by its coordinates
            (default True); otherwise independent coordinates.
        normalized, between_minus_1_1, quantile_cutoff: post-processing, see the module
            docstring.
        clamp_a, clamp_eps: clip ``A`` to ``[0, clamp_a]`` and ``eps`` to
            ``[-clamp_eps, clamp_eps]`` in the stable samplers (None: no clipping).
        device, dtype: where and in which floating type samples are made (``dtype`` may be a
            ``torch.dtype`` or one of ``'float32'``, ``'float64'``, ``'float16'``).

    Raises:
        ValueError: on an unknown name, an unknown parameter or an invalid value.
    """

    available_distributions = ("gmm_2", "gmm_grid", "swiss_roll", "skewed_levy", "sas", "sas_grid")
    mixture_distributions = _MIXTURES

    def __init__(self, name: str, **params: Any) -> None:
        unknown = sorted(set(params) - set(_PARAMETERS))
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {', '.join(unknown)} for Generator; "
                f"accepted: {', '.join(_PARAMETERS)}"
            )
        self._configure(name, **params)

    def _configure(
        self,
        name: str,
        *,
        nsamples: int = 20_000,
        std: float | None = None,
        theta: float | None = None,
        n_mixture: int | None = None,
        weights: Sequence[float] | None = None,
        data_alpha: float | None = None,
        alpha: float | None = None,
        isotropic: bool = True,
        normalized: bool = False,
        between_minus_1_1: bool = False,
        quantile_cutoff: float | None = 1.0,
        clamp_a: float | None = None,
        clamp_eps: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str = torch.float32,
    ) -> None:
        if name not in self.available_distributions:
            raise ValueError(
                f"unknown distribution {name!r}; "
                f"accepted: {', '.join(self.available_distributions)}"
            )
        self.name = name
        self.nsamples = _positive_int("nsamples", nsamples)
        self.std = _scale(name, std)
        self.theta = 1.0 if theta is None else _positive_float("theta", theta)
        self.alpha = _resolve_alpha(name, data_alpha, alpha)
        self.isotropic = bool(isotropic)
        self.normalized = bool(normalized)
        self.between_minus_1_1 = bool(between_minus_1_1)
        self.quantile_cutoff = _quantile(quantile_cutoff)
        self.clamp_a = None if clamp_a is None else _positive_float("clamp_a", clamp_a)
        self.clamp_eps = None if clamp_eps is None else _positive_float("clamp_eps", clamp_eps)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = _dtype(dtype)
        self.centers = self._mixture_centers(n_mixture)
        self.weights = self._mixture_weights(weights)

    def __repr__(self) -> str:
        return f"Generator({self.name!r}, nsamples={self.nsamples}, std={self.std})"

    @property
    def n_modes(self) -> int:
        """Number of mixture components (1 for the distributions that are not mixtures)."""
        return 1 if self.centers is None else self.centers.shape[0]

    def generate(
        self,
        size: Sequence[int] | torch.Size | None = None,
        generator: torch.Generator | None = None,
        return_labels: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Draw samples.

        Args:
            size: output shape; default ``(nsamples, 2)``. The 2D data sets require
                ``(n, 2)``; ``sas`` accepts any ``(n, ...)`` and ``skewed_levy`` any shape.
            generator: ``torch.Generator`` on ``device`` for a reproducible draw.
            return_labels: also return the component index of every point (mixtures only).

        Returns:
            Tensor of shape ``size``, or ``(x, labels)`` with ``labels`` an int64 tensor of
            shape ``(n,)`` in ``[0, n_modes)``, indexing ``self.centers`` and ``self.weights``.

        Raises:
            ValueError: on a shape this distribution does not support, or ``return_labels`` for
                a distribution that is not a mixture.
        """
        size = (self.nsamples, 2) if size is None else tuple(int(n) for n in size)
        if any(n < 0 for n in size) or len(size) == 0:
            raise ValueError(f"size must be a non-empty shape of non-negative ints, got {size}")
        if return_labels and self.name not in _MIXTURES:
            raise ValueError(
                f"return_labels needs a mixture ({', '.join(_MIXTURES)}), got {self.name!r}"
            )

        if self.name == "skewed_levy":
            return self._skewed_levy(size, generator)
        if self.name == "sas" and len(size) != 2:
            # Noise for images and other tensors: no 2D post-processing applies.
            return self._sas(size, generator)
        if len(size) != 2 or (self.name != "sas" and size[1] != 2):
            raise ValueError(f"{self.name!r} draws points of shape (n, 2), got size {size}")

        n = size[0]
        n_draw = n if self.quantile_cutoff >= 1.0 else math.ceil(n / self.quantile_cutoff)
        x, labels = self._draw(n_draw, size[1], generator)
        x, labels = _drop_largest_norms(x, labels, n)
        x = self._post_process(x)
        if return_labels:
            return x, labels
        return x

    def _draw(
        self, n: int, d: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.name == "sas":
            return self._sas((n, d), generator), None
        if self.name == "swiss_roll":
            return self._swiss_roll(n, generator), None

        labels = torch.multinomial(
            self.weights.to(self.device, torch.float32), n, replacement=True, generator=generator
        )
        if self.name == "sas_grid":
            noise = self._sas((n, 2), generator)
        else:
            noise = self.std * torch.randn(
                (n, 2), generator=generator, device=self.device, dtype=self.dtype
            )
        centers = self.centers.to(device=self.device, dtype=self.dtype)
        return centers[labels] + noise, labels

    def _sas(self, size: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        eps = sample_sas(
            self.alpha,
            size,
            isotropic=self.isotropic,
            clamp_a=self.clamp_a,
            clamp_eps=self.clamp_eps,
            generator=generator,
            device=self.device,
            dtype=self.dtype,
        )
        return eps if self.std is None else eps.mul_(self.std)

    def _skewed_levy(self, size: tuple[int, ...], generator: torch.Generator | None):
        a_shape = (size[0],) + (1,) * (len(size) - 1) if self.isotropic else size
        a = sample_skewed_levy(
            self.alpha,
            a_shape,
            clamp_a=self.clamp_a,
            generator=generator,
            device=self.device,
            dtype=self.dtype,
        )
        if self.std is not None:
            a.mul_(self.std)
        # A full-size copy, so that callers may modify the result in place.
        return a.expand(size).contiguous()

    def _swiss_roll(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        kw = {"generator": generator, "device": self.device, "dtype": self.dtype}
        t = 1.5 * math.pi * (1.0 + 2.0 * torch.rand(n, **kw))
        x = torch.stack((t * torch.cos(t), t * torch.sin(t)), dim=1) / SWISS_ROLL_SCALE
        return x + self.std * torch.randn((n, 2), **kw)

    def _post_process(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalized:
            if x.shape[0] < 2:
                raise ValueError(f"normalized needs at least 2 points, got {x.shape[0]}")
            x = (x - x.mean(dim=0)) / x.std(dim=0)
        if self.between_minus_1_1 and x.numel() > 0:
            x = x / x.abs().max()
        return x

    def _mixture_centers(self, n_mixture: int | None) -> torch.Tensor | None:
        """Component means in float64, shape (n_modes, 2), or None for non-mixtures."""
        if self.name == "gmm_2":
            return torch.tensor([[-self.theta, 0.0], [self.theta, 0.0]], dtype=torch.float64)
        if self.name not in ("gmm_grid", "sas_grid"):
            return None
        n_mixture = 9 if n_mixture is None else _positive_int("n_mixture", n_mixture)
        side = math.isqrt(n_mixture)
        if side * side != n_mixture:
            raise ValueError(
                f"n_mixture must be a perfect square for a grid (4, 9, 16, ...), got {n_mixture}"
            )
        ticks = self.theta * (torch.arange(side, dtype=torch.float64) - (side - 1) / 2)
        rows, cols = torch.meshgrid(ticks, ticks, indexing="ij")
        return torch.stack((rows.reshape(-1), cols.reshape(-1)), dim=1)

    def _mixture_weights(self, weights: Sequence[float] | None) -> torch.Tensor | None:
        """Mixture weights in float64, shape (n_modes,), or None for non-mixtures."""
        if self.centers is None:
            return None
        k = self.centers.shape[0]
        if weights is None:
            if k == 9 and self.name in ("gmm_grid", "sas_grid"):
                return torch.tensor(GRID_9_WEIGHTS, dtype=torch.float64)
            return torch.full((k,), 1.0 / k, dtype=torch.float64)

        w = torch.as_tensor(list(weights), dtype=torch.float64)
        if w.ndim != 1 or w.numel() != k:
            raise ValueError(f"weights must hold {k} numbers for {self.name!r}, got {weights!r}")
        if not torch.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"weights must be finite and non-negative, got {weights!r}")
        if abs(w.sum().item() - 1.0) > 1e-4:
            raise ValueError(f"weights must sum to 1, got sum {w.sum().item():.6g}: {weights!r}")
        return w / w.sum()


def _drop_largest_norms(
    x: torch.Tensor, labels: torch.Tensor | None, n: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Keep the ``n`` points of smallest norm, in their original order."""
    if x.shape[0] == n:
        return x, labels
    keep = torch.argsort(x.norm(dim=1))[:n].sort().values
    return x[keep], None if labels is None else labels[keep]


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    return value


def _positive_float(key: str, value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a positive number, got {value!r}") from None
    if not (out > 0.0 and math.isfinite(out)):
        raise ValueError(f"{key} must be a positive finite number, got {value!r}")
    return out


def _scale(name: str, std: float | None) -> float | None:
    if std is None:
        return _DEFAULT_STD[name]
    try:
        out = float(std)
    except (TypeError, ValueError):
        raise ValueError(f"std must be a non-negative number, got {std!r}") from None
    if not (out >= 0.0 and math.isfinite(out)):
        raise ValueError(f"std must be a non-negative finite number, got {std!r}")
    return out


def _resolve_alpha(name: str, data_alpha: float | None, alpha: float | None) -> float:
    if data_alpha is not None and alpha is not None and float(data_alpha) != float(alpha):
        raise ValueError(
            f"data_alpha={data_alpha!r} and alpha={alpha!r} disagree; give one tail index"
        )
    value = data_alpha if data_alpha is not None else alpha
    if value is None:
        return 1.7
    # Gaussian mixtures and the swiss roll ignore the tail index. Validating it only where it is
    # used lets a shared config with any alpha still build them.
    return check_alpha(value) if name in _STABLE else float(value)


def _quantile(q: float | None) -> float:
    if q is None:
        return 1.0
    try:
        out = float(q)
    except (TypeError, ValueError):
        raise ValueError(f"quantile_cutoff must be a number in (0, 1], got {q!r}") from None
    if not 0.0 < out <= 1.0:
        raise ValueError(f"quantile_cutoff must lie in (0, 1], got {q!r}; use 1 to keep all")
    return out


def _dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(f"unknown dtype {dtype!r}; accepted: torch dtypes or {', '.join(_DTYPES)}")
