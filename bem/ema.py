"""Exponential moving averages of model weights, with a warmup or with bias correction.

Two schedules, chosen by ``schedule``:

- ``"warmup"`` (default): the decay at update ``n`` is ``min(r, (1 + n) / (10 + n))`` (the
  ``num_updates`` form of TensorFlow's ``ExponentialMovingAverage``), starting from the model's
  weights. Early on the average follows the weights closely; after ``n >> 1/(1 - r)`` updates
  it is the plain EMA at rate ``r``. At 400 updates the decay is 0.978 whatever ``r`` is above
  that, so a short run is averaged over its last ~50 steps.
- ``"bias_corrected"``: after ``n`` updates with weights ``theta_1 .. theta_n`` and rate
  ``r``, the accumulator is ``m_n = r * m_{n-1} + (1 - r) * theta_n`` with ``m_0 = 0``, and
  the averaged weights are ``m_n / (1 - r**n)``: the weighted mean of ``theta_1 .. theta_n``
  with weights proportional to ``r**(n - k)``. This is the bias correction of Adam (Kingma and
  Ba, 2015, Algorithm 1 and section 3). Without it, an average initialised at ``theta_0`` stays
  close to the initial weights for the first ``~1/(1 - r)`` updates (400 updates at rate 0.999
  keep 67% of ``theta_0``). With it, the weights of ``theta_1 .. theta_n`` are nearly uniform
  while ``n < 1/(1 - r)``, so a short run at rate 0.999 averages in its early, poor iterates.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA", "EMA_SCHEDULES"]

EMA_SCHEDULES = ("warmup", "bias_corrected")


class EMA:
    """Moving average of a model's floating-point parameters (see the module docstring).

    Buffers (running statistics, for instance) and non-float parameters are copied from the
    live model at each update rather than averaged.

    Args:
        model: the trained model; it is deep-copied, so later changes to ``model`` do not
            touch the averaged copy except through :meth:`update`.
        rate: decay rate ``r`` in (0, 1).
        schedule: ``"warmup"`` or ``"bias_corrected"``.
    """

    def __init__(self, model: nn.Module, rate: float, schedule: str = "warmup") -> None:
        if not 0.0 < rate < 1.0:
            raise ValueError(f"EMA rate must lie in (0, 1), got {rate!r}")
        if schedule not in EMA_SCHEDULES:
            raise ValueError(f"EMA schedule must be one of {EMA_SCHEDULES}, got {schedule!r}")
        self.rate = float(rate)
        self.schedule = schedule
        self.num_updates = 0
        self._module = copy.deepcopy(model).eval().requires_grad_(False)
        # warmup: the accumulator is the average itself, starting at the model's weights;
        # bias_corrected: the Adam-style first moment, starting at zero.
        self._accumulator = {
            name: param.detach().clone() if schedule == "warmup" else torch.zeros_like(param)
            for name, param in model.named_parameters()
            if param.is_floating_point()
        }
        self._stale = False

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` into the average (one call per optimizer step)."""
        decay = self.decay(self.num_updates + 1)
        for name, param in model.named_parameters():
            accumulator = self._accumulator.get(name)
            if accumulator is not None:
                accumulator.lerp_(param.detach(), 1.0 - decay)
        for target, source in zip(self._module.buffers(), model.buffers(), strict=True):
            target.copy_(source)
        self.num_updates += 1
        self._stale = True

    def decay(self, update: int) -> float:
        """Return the decay applied at update number ``update`` (counted from 1)."""
        if self.schedule == "warmup":
            return min(self.rate, (1.0 + update) / (10.0 + update))
        return self.rate

    @property
    def module(self) -> nn.Module:
        """The averaged model, in eval mode (bias-corrected weights are written lazily)."""
        if self._stale:
            self._write_averaged_weights()
        return self._module

    @torch.no_grad()
    def _write_averaged_weights(self) -> None:
        correction = 1.0
        if self.schedule == "bias_corrected":
            correction = 1.0 - self.rate**self.num_updates
        params = dict(self._module.named_parameters())
        for name, accumulator in self._accumulator.items():
            params[name].copy_(accumulator / correction)
        self._stale = False

    def state_dict(self) -> dict:
        """Return rate, schedule, update count, accumulator and the averaged model's state."""
        return {
            "rate": self.rate,
            "schedule": self.schedule,
            "num_updates": self.num_updates,
            "accumulator": {k: v.clone() for k, v in self._accumulator.items()},
            "module": self.module.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a state from :meth:`state_dict`; the rates and schedules must match."""
        if abs(state["rate"] - self.rate) > 0.0:
            raise ValueError(
                f"EMA state has rate {state['rate']!r} but this EMA uses {self.rate!r}"
            )
        schedule = state.get("schedule", "bias_corrected")
        if schedule != self.schedule:
            raise ValueError(
                f"EMA state uses the {schedule!r} schedule but this EMA uses {self.schedule!r}"
            )
        missing = set(self._accumulator) ^ set(state["accumulator"])
        if missing:
            raise ValueError(f"EMA state does not match the model: parameters {sorted(missing)}")
        for name, tensor in state["accumulator"].items():
            self._accumulator[name].copy_(tensor)
        self._module.load_state_dict(state["module"])
        self.num_updates = int(state["num_updates"])
        self._stale = self.num_updates > 0
