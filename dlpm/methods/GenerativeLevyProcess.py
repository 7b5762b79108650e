"""Training losses and sampling for heavy-tailed diffusion: DLPM, DLIM, the DDPM baseline and LIM.

``GenerativeLevyProcess`` is the facade that experiments use. It checks options, turns integer
steps into the network's time input, and dispatches to the pure math in ``dlpm.methods.dlpm``
and ``dlpm.methods.samplers``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from dlpm.methods.dlpm import DLPM, broadcast_to_batch
from dlpm.methods.lim import EXACT_SCORE_WEIGHT, LevyVPSDE, lim_sample, lim_training_losses
from dlpm.methods.samplers import sample_dlim, sample_dlpm

__all__ = ["GenerativeLevyProcess", "LossOptions", "lp_loss", "reduce_median_of_means"]

MODEL_MEAN_TYPES = ("EPSILON",)
MODEL_VAR_TYPES = ("FIXED",)
LOSS_MONTE_CARLO = ("mean", "median")


@dataclass(frozen=True)
class LossOptions:
    """Options of :meth:`GenerativeLevyProcess.training_losses`.

    Attributes:
        lploss: 2 for the root of the mean square (the DLPM paper's default), 1 for smooth L1,
            -1 for the mean square, any other p > 0 for ``mean(|d|**p)**(1/p)``.
        loss_monte_carlo: ``'mean'`` over the batch, or ``'median'``: median of means over
            ``monte_carlo_outer`` draws of ``A``, each averaged over ``monte_carlo_inner`` draws
            of ``z``.
        monte_carlo_outer, monte_carlo_inner: sizes of the median-of-means estimate.
        clamp_a, clamp_eps: clamps of the training noise (``None``: the process default).
        generator: optional ``torch.Generator`` for the timesteps and the noise.
    """

    lploss: float = 2.0
    loss_monte_carlo: str = "mean"
    monte_carlo_outer: int = 4
    monte_carlo_inner: int = 1
    clamp_a: float | None = None
    clamp_eps: float | None = None
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if not (self.lploss == -1 or self.lploss > 0):
            raise ValueError(f"lploss must be -1 (mean square) or a positive p, got {self.lploss}")
        if self.loss_monte_carlo not in LOSS_MONTE_CARLO:
            raise ValueError(
                f"loss_monte_carlo must be one of {LOSS_MONTE_CARLO}, got {self.loss_monte_carlo!r}"
            )
        for name in ("monte_carlo_outer", "monte_carlo_inner"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    @classmethod
    def from_kwargs(cls, kwargs: dict) -> LossOptions:
        """Build options from keyword arguments, rejecting unknown names."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown training option(s) {unknown}; accepted: {sorted(known)}")
        return cls(**kwargs)


def lp_loss(difference: torch.Tensor, p: float) -> torch.Tensor:
    """Return the per-example loss of ``difference`` (shape ``(B, ...)``), shape ``(B,)``.

    ``p = 2``: root of the mean square; ``p = 1``: smooth L1 (Huber with threshold 1), averaged;
    ``p = -1``: mean square; other ``p > 0``: ``mean(|d|**p)**(1/p)``. Means run over the
    coordinates of each example, so values do not scale with the data dimension.
    """
    flat = difference.flatten(1)
    n = flat.shape[1]
    if p == -1:
        return flat.square().mean(1)
    if p == 1:
        return F.smooth_l1_loss(flat, torch.zeros_like(flat), reduction="none").mean(1)
    # vector_norm has a zero subgradient at 0, where a plain root of the mean has an infinite one.
    return torch.linalg.vector_norm(flat, ord=p, dim=1) / n ** (1.0 / p)


def reduce_median_of_means(losses: torch.Tensor) -> torch.Tensor:
    """Reduce losses of shape ``(outer, inner, B)``: mean over inner, median over outer, then
    mean over the batch. Returns a scalar."""
    return losses.mean(1).median(0).values.mean()


@contextlib.contextmanager
def _eval_mode(models: dict[str, nn.Module]) -> Iterator[None]:
    """Put the models in eval mode and restore each one's previous mode on exit."""
    previous = {name: m.training for name, m in models.items()}
    try:
        for m in models.values():
            m.eval()
        yield
    finally:
        for name, m in models.items():
            m.train(previous[name])


class GenerativeLevyProcess:
    """Training losses and samplers for DLPM, DLIM and the Gaussian DDPM baseline.

    Args:
        alpha: tail index in (0, 2].
        device: where the schedule tensors live (inputs decide where computation runs).
        reverse_steps: number of training steps T of the chain.
        model_mean_type: what the network predicts; only ``'EPSILON'`` is supported.
        model_var_type: reverse variance; only ``'FIXED'`` is supported.
        time_spacing: ``'linear'`` or ``'quadratic'``.
        rescale_timesteps: give the network ``t/T`` in [0, 1) rather than the integer step, which
            lets sampling use fewer steps than training.
        isotropic: one ``A`` per example, or one per coordinate.
        LIM: use the continuous-time Levy-Ito model (Yoon et al. 2023) instead of DLPM: the
            network then receives continuous time t in [1e-5, 0.9946] and predicts -eps/alpha,
            and ``reverse_steps`` sets the sampling grid.
        scale: ``'scale_preserving'`` or ``'scale_exploding'``.
        input_scaling: divide the network input by ``1 + sigma_bar_t`` (scale-exploding runs).
        gaussian: the unit-variance Gaussian DDPM baseline (alpha forced to 2, ``A = 1``).
        clamp_a, clamp_eps: default clamps for training and sampling noise.
    """

    def __init__(
        self,
        alpha: float,
        device: torch.device | str | None,
        reverse_steps: int,
        model_mean_type: str = "EPSILON",
        model_var_type: str = "FIXED",
        time_spacing: str = "linear",
        rescale_timesteps: bool = True,
        isotropic: bool = True,
        LIM: bool = False,  # noqa: N803 - public name of the original interface
        scale: str = "scale_preserving",
        input_scaling: bool = False,
        gaussian: bool = False,
        clamp_a: float | None = None,
        clamp_eps: float | None = None,
    ) -> None:
        if str(model_mean_type).upper() not in MODEL_MEAN_TYPES:
            raise NotImplementedError(
                f"model_mean_type {model_mean_type!r} is not supported; "
                f"supported: {MODEL_MEAN_TYPES}"
            )
        if str(model_var_type).upper() not in MODEL_VAR_TYPES:
            raise NotImplementedError(
                f"model_var_type {model_var_type!r} is not supported; supported: {MODEL_VAR_TYPES}"
            )
        self.LIM = bool(LIM)
        # LIM's continuous-time SDE (Yoon et al. 2023); the DLPM chain below still fixes alpha,
        # the default number of reverse steps and the noise options for both methods.
        self.sde = LevyVPSDE(alpha) if self.LIM else None
        self.lim_score_weight = EXACT_SCORE_WEIGHT
        self.rescale_timesteps = bool(rescale_timesteps)
        self.input_scaling = bool(input_scaling)
        self.dlpm = DLPM(
            alpha,
            device,
            reverse_steps,
            time_spacing=time_spacing,
            isotropic=isotropic,
            clamp_a=clamp_a,
            clamp_eps=clamp_eps,
            scale=scale,
            gaussian=gaussian,
        )

    @property
    def alpha(self) -> float:
        return self.dlpm.alpha

    @property
    def reverse_steps(self) -> int:
        """Number of training steps T."""
        return self.dlpm.diffusion_steps

    @property
    def device(self) -> torch.device:
        return self.dlpm.device

    def network_time(self, t: torch.Tensor, steps: int) -> torch.Tensor:
        """Return the network's time input for integer steps ``t``: ``t/T`` or ``t`` as floats."""
        t = t.to(torch.float32)
        return t / steps if self.rescale_timesteps else t

    def _network_eps(
        self, net: nn.Module, dlpm: DLPM, x_t: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        x_in = x_t
        if self.input_scaling:
            x_in = x_t / (1 + broadcast_to_batch(dlpm.sigma_bar, t, x_t.ndim))
        return net(x_in, self.network_time(t, dlpm.diffusion_steps))

    def training_losses(
        self, models: dict[str, nn.Module], x_start: torch.Tensor, **kwargs
    ) -> dict[str, torch.Tensor]:
        """Return ``{'loss': scalar}``, the DLPM denoising loss on a batch (DLPM section 3).

        Steps are uniform on ``1 .. T-1``; given ``A_t``, ``x_t`` is Gaussian around
        ``gamma_bar_t x_0`` and the network regresses ``eps_t = sqrt(A_t) z``.

        Args:
            models: ``{'default': net}`` with ``net(x_t, time) -> eps`` of ``x_t``'s shape.
            x_start: data batch ``x_0``, shape ``(B, ...)``.
            **kwargs: the fields of :class:`LossOptions`.
        """
        options = LossOptions.from_kwargs(kwargs)
        net = models["default"]
        dlpm = self.dlpm
        clamp_a = options.clamp_a if options.clamp_a is not None else dlpm.clamp_a
        clamp_eps = options.clamp_eps if options.clamp_eps is not None else dlpm.clamp_eps
        gen = options.generator
        if self.sde is not None:
            # LIM's own objective: smooth L1 against -eps/alpha at t ~ U(t_min, T); the DLPM
            # options lploss and loss_monte_carlo do not apply to it.
            losses = lim_training_losses(
                net,
                x_start,
                self.sde,
                generator=gen,
                isotropic=dlpm.isotropic,
                clamp_a=clamp_a,
                clamp_eps=clamp_eps,
            )
            return {"loss": losses.mean()}
        batch = x_start.shape[0]
        device = x_start.device

        t = torch.randint(1, dlpm.diffusion_steps, (batch,), generator=gen, device=device)
        t_schedule = t.to(dlpm.device)

        if options.loss_monte_carlo == "mean":
            _, eps = dlpm.draw_noise(
                tuple(x_start.shape), clamp_a=clamp_a, clamp_eps=clamp_eps, generator=gen
            )
            x_t = dlpm.q_sample(x_start, t_schedule, eps)
            prediction = self._network_eps(net, dlpm, x_t, t_schedule)
            return {"loss": lp_loss(prediction - eps, options.lploss).mean()}

        # Median of means: replicate each example over outer draws of A and inner draws of z.
        outer, inner = options.monte_carlo_outer, options.monte_carlo_inner
        data_shape = tuple(x_start.shape[1:])
        a = dlpm.draw_a(
            (outer, 1) + dlpm.a_shape(tuple(x_start.shape)), clamp_a=clamp_a, generator=gen
        )
        z = torch.randn((outer, inner, batch) + data_shape, generator=gen, device=device)
        eps = z * a.sqrt()
        if clamp_eps is not None:
            eps = eps.clamp(-clamp_eps, clamp_eps)
        flat = (outer * inner * batch,) + data_shape
        t_flat = t_schedule.repeat(outer * inner)
        x_t = dlpm.q_sample(
            x_start.expand((outer, inner) + tuple(x_start.shape)).reshape(flat),
            t_flat,
            eps.reshape(flat),
        )
        prediction = self._network_eps(net, dlpm, x_t, t_flat)
        losses = lp_loss(prediction - eps.reshape(flat), options.lploss)
        return {"loss": reduce_median_of_means(losses.reshape(outer, inner, batch))}

    def _eps_function(
        self, net: nn.Module, dlpm: DLPM, batch: int, clip_denoised
    ) -> Callable[[torch.Tensor, int], torch.Tensor]:
        bounds = _clip_bounds(clip_denoised)

        def eps_fn(x_t: torch.Tensor, step: int) -> torch.Tensor:
            t = torch.full((batch,), step, device=x_t.device, dtype=torch.long)
            eps = self._network_eps(net, dlpm, x_t, t)
            if bounds is not None:
                x_start = dlpm.predict_x_start(x_t, t, eps).clamp(*bounds)
                eps = dlpm.eps_from_x_start(x_t, t, x_start)
            return eps

        return eps_fn

    @torch.no_grad()
    def sample(
        self,
        models: dict[str, nn.Module],
        shape: tuple[int, ...],
        reverse_steps: int | None = None,
        deterministic: bool = False,
        dlim_eta: float = 0.0,
        clip_denoised: bool | float | tuple[float, float] = False,
        clamp_a: float | None = None,
        clamp_eps: float | None = None,
        get_sample_history: bool = False,
        print_progression: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Draw samples with the stochastic DLPM sampler, or DLIM when ``deterministic``.

        Args:
            models: ``{'default': net}``; each model's train/eval mode is restored afterwards.
            shape: output shape ``(B, ...)``.
            reverse_steps: number of reverse steps; a value other than the training steps
                builds a new chain for it (the process itself is left unchanged), which needs
                ``rescale_timesteps``. ``None``: the training steps.
            deterministic: use DLIM instead of the stochastic DLPM sampler.
            dlim_eta: DLIM noise level in [0, 1]; 0 is deterministic.
            clip_denoised: clip the predicted ``x_0`` at every step and recompute ``eps``:
                ``True`` for [-1, 1], a number ``c`` for [-c, c], or a ``(low, high)`` pair.
            clamp_a, clamp_eps: noise clamps (``None``: the process default).
            get_sample_history: also return all states, shape ``(reverse_steps, *shape)``.
            print_progression: show a tqdm bar.
            generator: optional ``torch.Generator`` on the process's device.

        Returns:
            Samples of ``shape``, or ``(samples, history)``.
        """
        steps = self.reverse_steps if reverse_steps is None else int(reverse_steps)
        if steps != self.reverse_steps and not self.rescale_timesteps and not self.LIM:
            raise ValueError(
                f"reverse_steps={steps} differs from the training steps {self.reverse_steps}, "
                "which needs rescale_timesteps=True"
            )
        clamp_a = clamp_a if clamp_a is not None else self.dlpm.clamp_a
        clamp_eps = clamp_eps if clamp_eps is not None else self.dlpm.clamp_eps
        shape = tuple(shape)
        if self.sde is not None:
            if clip_denoised or dlim_eta:
                raise ValueError("clip_denoised and dlim_eta apply to DLPM only, not to LIM")
            with _eval_mode(models):
                return lim_sample(
                    models["default"],
                    shape,
                    self.sde,
                    steps,
                    deterministic=deterministic,
                    generator=generator,
                    isotropic=self.dlpm.isotropic,
                    clamp_a=clamp_a,
                    clamp_eps=clamp_eps,
                    score_weight=self.lim_score_weight,
                    get_sample_history=get_sample_history,
                    progress=print_progression,
                    device=self.device,
                )

        dlpm = self.dlpm if steps == self.reverse_steps else self.dlpm.rebuild(steps)
        eps_fn = self._eps_function(models["default"], dlpm, shape[0], clip_denoised)

        common = dict(
            clamp_a=clamp_a,
            clamp_eps=clamp_eps,
            generator=generator,
            history=get_sample_history,
            progress=print_progression,
        )
        with _eval_mode(models):
            if deterministic:
                x, states = sample_dlim(eps_fn, dlpm, shape, eta=float(dlim_eta), **common)
            else:
                x, states = sample_dlpm(eps_fn, dlpm, shape, **common)
        return (x, states) if get_sample_history else x


def _clip_bounds(clip_denoised) -> tuple[float, float] | None:
    """Turn the ``clip_denoised`` option into ``(low, high)`` or ``None``."""
    if clip_denoised is False or clip_denoised is None:
        return None
    if clip_denoised is True:
        return (-1.0, 1.0)
    if isinstance(clip_denoised, (int, float)):
        if not clip_denoised > 0 or math.isinf(clip_denoised):
            raise ValueError(f"clip_denoised must be a positive bound, got {clip_denoised}")
        return (-float(clip_denoised), float(clip_denoised))
    low, high = (float(v) for v in clip_denoised)
    if not low < high:
        raise ValueError(f"clip_denoised needs low < high, got {clip_denoised}")
    return (low, high)
