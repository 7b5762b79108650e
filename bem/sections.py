"""Config sections that bem itself reads: ``run``, ``training``, ``optim``, ``eval``, ``logger``.

A method package builds its full schema from these plus its own sections, see
:func:`bem_sections`. Units: epochs count passes over the training set, steps count optimizer
updates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bem.config import option
from bem.datasets import DataConfig
from bem.loggers import check_logger_spec

__all__ = [
    "EvalConfig",
    "LoggerConfig",
    "OptimConfig",
    "RunConfig",
    "TrainingConfig",
    "bem_sections",
]


@dataclass(frozen=True)
class RunConfig:
    """Config section ``run``: length of the run and when to evaluate and save."""

    epochs: int = option(20, ge=1, help="number of training epochs")
    eval_freq: int | None = option(
        None, ge=1, help="evaluate every this many epochs and at the last one (null: never)"
    )
    checkpoint_freq: int | None = option(
        None, ge=1, help="save a checkpoint every this many epochs (the last epoch always)"
    )
    progress: bool = option(True, help="show tqdm progress bars")
    device: str = option("auto", help="torch device: auto, cpu, cuda or cuda:N")
    threads: int | None = option(
        None, ge=1, help="CPU threads of torch operations (null: torch's default)"
    )


@dataclass(frozen=True)
class TrainingConfig:
    """Config section ``training``: the optimisation loop."""

    batch_size: int = option(1024, ge=1, help="examples per optimizer step")
    grad_clip: float | None = option(
        None, gt=0.0, help="clip the gradient norm to this value (null: no clipping)"
    )
    ema_schedule: Literal["warmup", "bias_corrected"] = option(
        "warmup",
        help="EMA decay schedule: min(rate, (1+n)/(10+n)) at update n, or Adam's bias"
        " correction (which weights early updates almost uniformly in short runs)",
    )
    ema_rates: tuple[float, ...] = option(
        (), gt=0.0, lt=1.0, help="decay rates of the bias-corrected EMA models"
    )
    n_max_batch: int | None = option(
        None, ge=1, help="stop each epoch after this many batches (null: full epochs)"
    )
    nonfinite_loss: Literal["raise", "skip"] = option(
        "raise", help="on a NaN or infinite loss: stop with an error, or skip the batch"
    )


@dataclass(frozen=True)
class OptimConfig:
    """Config section ``optim``: AdamW and its learning-rate schedule."""

    optimizer: Literal["adamw"] = option("adamw", help="optimizer")
    lr: float = option(5.0e-3, gt=0.0, help="peak learning rate")
    weight_decay: float = option(0.0, ge=0.0, help="AdamW weight decay")
    betas: tuple[float, ...] = option((0.9, 0.999), ge=0.0, lt=1.0, help="AdamW betas")
    schedule: Literal["none", "steplr", "linear"] = option(
        "none", help="learning-rate schedule after the warmup"
    )
    warmup: int = option(0, ge=0, help="optimizer steps of linear warmup from 0 to lr")
    lr_steps: int = option(2000, ge=1, help="'linear': steps to decay from lr to 0")
    lr_step_size: int = option(400, ge=1, help="'steplr': steps between decays")
    lr_gamma: float = option(0.99, gt=0.0, le=1.0, help="'steplr': factor per decay")

    def __post_init__(self) -> None:
        if len(self.betas) != 2:
            raise ValueError(f"'betas' must hold 2 numbers, got {list(self.betas)}")


@dataclass(frozen=True)
class EvalConfig:
    """Config section ``eval``: generation and metrics at evaluation time."""

    nsamples: int = option(10_000, ge=1, help="number of samples generated per evaluation")
    batch_size: int = option(10_000, ge=1, help="samples generated per sampler call")
    ema: bool = option(True, help="evaluate the EMA models too")
    plot: bool = option(True, help="save scatter and survival plots of the samples")
    animate: bool = option(False, help="save a GIF of the reverse process")
    animate_nsamples: int = option(2000, ge=1, help="samples shown in the GIF")
    save_samples: bool = option(True, help="save the generated samples as a .pt tensor")


@dataclass(frozen=True)
class LoggerConfig:
    """Config section ``logger``: tracker backends beside the default console and JSONL log."""

    trackers: tuple[str, ...] = option(
        (),
        help="tracker loggers: tensorboard, mlflow, neptune, a registered name or"
        " module.path:ClassName",
    )

    tracker: str = option("tensorboard", help="the tracker that --log without a value turns on")

    def __post_init__(self) -> None:
        check_logger_spec(self.tracker)
        for spec in self.trackers:
            check_logger_spec(spec)


def bem_sections() -> dict[str, type]:
    """Return the sections bem reads, by name, for a method package's schema."""
    return {
        "data": DataConfig,
        "training": TrainingConfig,
        "optim": OptimConfig,
        "eval": EvalConfig,
        "run": RunConfig,
        "logger": LoggerConfig,
    }
