"""Exponential moving averages of model weights, with bias correction.

After ``n`` updates with weights ``theta_1 .. theta_n`` and rate ``r``, the accumulator is
``m_n = r * m_{n-1} + (1 - r) * theta_n`` with ``m_0 = 0``, and the averaged weights are
``m_n / (1 - r**n)``: the weighted mean of ``theta_1 .. theta_n`` with weights proportional to
``r**(n - k)``. This is the bias correction of Adam (Kingma and Ba, 2015, Algorithm 1 and
section 3). Without it, an average initialised at ``theta_0`` stays close to the initial weights
for the first ``~1/(1 - r)`` updates (400 updates at rate 0.999 keep 67% of ``theta_0``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """Bias-corrected moving average of a model's floating-point parameters.

    Buffers (running statistics, for instance) and non-float parameters are copied from the
    live model at each update rather than averaged.

    Args:
        model: the trained model; it is deep-copied, so later changes to ``model`` do not
            touch the averaged copy except through :meth:`update`.
        rate: decay rate ``r`` in (0, 1).
    """

    def __init__(self, model: nn.Module, rate: float) -> None:
        if not 0.0 < rate < 1.0:
            raise ValueError(f"EMA rate must lie in (0, 1), got {rate!r}")
        self.rate = float(rate)
        self.num_updates = 0
        self._module = copy.deepcopy(model).eval().requires_grad_(False)
        self._accumulator = {
            name: torch.zeros_like(param)
            for name, param in model.named_parameters()
            if param.is_floating_point()
        }
        self._stale = False

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` into the average (one call per optimizer step)."""
        for name, param in model.named_parameters():
            accumulator = self._accumulator.get(name)
            if accumulator is not None:
                accumulator.lerp_(param.detach(), 1.0 - self.rate)
        for target, source in zip(self._module.buffers(), model.buffers(), strict=True):
            target.copy_(source)
        self.num_updates += 1
        self._stale = True

    @property
    def module(self) -> nn.Module:
        """The averaged model, in eval mode (bias-corrected weights are written lazily)."""
        if self._stale:
            self._write_averaged_weights()
        return self._module

    @torch.no_grad()
    def _write_averaged_weights(self) -> None:
        correction = 1.0 - self.rate**self.num_updates
        params = dict(self._module.named_parameters())
        for name, accumulator in self._accumulator.items():
            params[name].copy_(accumulator / correction)
        self._stale = False

    def state_dict(self) -> dict:
        """Return rate, update count, accumulator and the averaged model's state dict."""
        return {
            "rate": self.rate,
            "num_updates": self.num_updates,
            "accumulator": {k: v.clone() for k, v in self._accumulator.items()},
            "module": self.module.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a state from :meth:`state_dict`; the rates must match."""
        if abs(state["rate"] - self.rate) > 0.0:
            raise ValueError(
                f"EMA state has rate {state['rate']!r} but this EMA uses {self.rate!r}"
            )
        missing = set(self._accumulator) ^ set(state["accumulator"])
        if missing:
            raise ValueError(f"EMA state does not match the model: parameters {sorted(missing)}")
        for name, tensor in state["accumulator"].items():
            self._accumulator[name].copy_(tensor)
        self._module.load_state_dict(state["module"])
        self.num_updates = int(state["num_updates"])
        self._stale = self.num_updates > 0
