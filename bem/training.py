"""The training loop: epochs of batches, one optimizer step per batch, EMA updates.

:class:`Trainer` receives everything it uses (loss function, models, optimizers, schedules,
EMAs, batches) and does not evaluate, plot or save; :class:`bem.Experiments.Experiment` calls
those on schedule.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from tqdm.auto import tqdm

from bem.data import BatchSource
from bem.ema import EMA

logger = logging.getLogger(__name__)

__all__ = ["EpochStats", "NonFiniteLossError", "Trainer", "TrainState"]


class NonFiniteLossError(FloatingPointError):
    """A NaN or infinite loss or gradient norm stopped training."""


@dataclass
class TrainState:
    """Counters that a checkpoint restores: completed epochs and steps, skipped batches."""

    epoch: int = 0
    step: int = 0
    skipped_batches: int = 0


@dataclass(frozen=True)
class EpochStats:
    """Averages over the optimizer steps of one epoch (NaN when every batch was skipped)."""

    loss: float
    grad_norm: float
    lr: float
    steps: int
    skipped_batches: int
    seconds: float
    # Loss of each optimizer step that was not skipped, in order.
    step_losses: tuple[float, ...] = ()

    def as_dict(self) -> dict[str, float | int]:
        """Return the fields as a dict for a logger."""
        return {
            "loss": self.loss,
            "grad_norm": self.grad_norm,
            "lr": self.lr,
            "steps": self.steps,
            "skipped_batches": self.skipped_batches,
            "epoch_seconds": self.seconds,
        }


class Trainer:
    """Run epochs of optimizer steps on the batches of a :class:`bem.data.BatchSource`.

    Args:
        compute_loss: ``(models, batch) -> scalar loss``, with the method's options and its
            random generator bound.
        models: the trained networks by name.
        optimizers, lr_schedules: keyed like ``models``; a schedule may be None.
        emas: EMA copies of each model, keyed like ``models``.
        batches: the training batches.
        grad_clip: maximum gradient norm per model, or None for no clipping.
        n_max_batch: batches per epoch at most, or None.
        nonfinite_loss: ``"raise"`` stops with :class:`NonFiniteLossError`; ``"skip"``
            drops the batch without an update and counts it.
        progress: show a tqdm bar over the batches of each epoch.
    """

    def __init__(
        self,
        compute_loss: Callable[[Mapping[str, nn.Module], torch.Tensor], torch.Tensor],
        models: Mapping[str, nn.Module],
        optimizers: Mapping[str, Optimizer],
        lr_schedules: Mapping[str, LRScheduler | None],
        emas: Mapping[str, Sequence[EMA]],
        batches: BatchSource,
        *,
        grad_clip: float | None = None,
        n_max_batch: int | None = None,
        nonfinite_loss: str = "raise",
        progress: bool = True,
    ) -> None:
        if nonfinite_loss not in ("raise", "skip"):
            raise ValueError(f"nonfinite_loss must be 'raise' or 'skip', got {nonfinite_loss!r}")
        self.compute_loss = compute_loss
        self.models = dict(models)
        self.optimizers = dict(optimizers)
        self.lr_schedules = dict(lr_schedules)
        self.emas = {name: list(emas.get(name, [])) for name in self.models}
        self.batches = batches
        self.grad_clip = grad_clip
        self.n_max_batch = n_max_batch
        self.nonfinite_loss = nonfinite_loss
        self.progress = progress
        self.state = TrainState()

    def batches_per_epoch(self) -> int:
        """Return the number of batches an epoch runs (after ``n_max_batch``)."""
        full = len(self.batches)
        return full if self.n_max_batch is None else min(full, self.n_max_batch)

    def train_epoch(self) -> EpochStats:
        """Train one epoch; ``state.epoch`` is incremented at its end.

        Raises:
            NonFiniteLossError: in ``"raise"`` mode, naming the epoch and the step.
        """
        epoch = self.state.epoch + 1
        total = self.batches_per_epoch()
        for model in self.models.values():
            model.train()

        start = time.perf_counter()
        norm_sum = 0.0
        step_losses: list[float] = []
        skipped = 0
        bar = tqdm(
            total=total, desc=f"epoch {epoch}", disable=not self.progress, leave=False, unit="batch"
        )
        with bar:
            for index, batch in enumerate(self.batches.epoch()):
                if index >= total:
                    break
                loss_value, norm_value = self._step(batch, epoch, index, total)
                bar.update(1)
                if loss_value is None:
                    skipped += 1
                    continue
                step_losses.append(loss_value)
                norm_sum += norm_value
                bar.set_postfix(loss=f"{loss_value:.4g}", refresh=False)

        self.state.epoch = epoch
        self.state.skipped_batches += skipped
        optimizer = next(iter(self.optimizers.values()))
        steps = len(step_losses)
        return EpochStats(
            loss=math.fsum(step_losses) / steps if steps else math.nan,
            grad_norm=norm_sum / steps if steps else math.nan,
            lr=optimizer.param_groups[0]["lr"],
            steps=steps,
            skipped_batches=skipped,
            seconds=time.perf_counter() - start,
            step_losses=tuple(step_losses),
        )

    def _step(
        self, batch: torch.Tensor, epoch: int, index: int, total: int
    ) -> tuple[float | None, float]:
        """One optimizer step; returns (loss, gradient norm), or (None, nan) if skipped."""
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        loss = self.compute_loss(self.models, batch)
        loss.backward()

        max_norm = math.inf if self.grad_clip is None else self.grad_clip
        norms = [
            nn.utils.clip_grad_norm_(model.parameters(), max_norm) for model in self.models.values()
        ]
        grad_norm = torch.stack(norms).square().sum().sqrt()
        # One device synchronisation per step: the finiteness check needs the values anyway.
        loss_value, norm_value = torch.stack([loss.detach().float(), grad_norm.float()]).tolist()

        if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
            step = self.state.step + 1
            quantity = f"loss {loss_value}" if not math.isfinite(loss_value) else "gradient norm"
            if self.nonfinite_loss == "raise":
                raise NonFiniteLossError(
                    f"non-finite {quantity} at epoch {epoch}, step {step} (batch {index + 1} of"
                    f" {total}); training stopped without saving, so the last checkpoint is"
                    " unchanged. Lower optim.lr, set training.grad_clip, or set"
                    " training.nonfinite_loss: skip"
                )
            logger.warning(
                "skipped batch %d of epoch %d: non-finite %s", index + 1, epoch, quantity
            )
            for optimizer in self.optimizers.values():
                optimizer.zero_grad(set_to_none=True)
            return None, math.nan

        for name, optimizer in self.optimizers.items():
            optimizer.step()
            schedule = self.lr_schedules.get(name)
            if schedule is not None:
                schedule.step()
            for ema in self.emas[name]:
                ema.update(self.models[name])
        self.state.step += 1
        return loss_value, norm_value
