"""One experiment run: config, data, method, models, training, evaluation and checkpoints.

Typical use (what ``run.py`` does)::

    exp = Experiment("models/run1", p, init=dlpm_init())   # validates p, writes nothing
    exp.print_parameters()
    exp.prepare()                                           # builds everything in memory
    if resume:
        exp.load()                                          # latest checkpoint
    try:
        exp.run()                                           # trains, evaluates, saves
    finally:
        exp.terminate()

Files in the run folder: ``config.yml`` (the resolved config), ``checkpoint_<epoch>.pt``,
``metrics.jsonl``, ``eval_results.json``, ``losses.json``, and the plots and samples of each
evaluation. Nothing is written before :meth:`Experiment.run`, :meth:`Experiment.save` or
:meth:`Experiment.evaluate`.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bem.checkpoint import (
    CheckpointError,
    capture_rng_state,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from bem.data import make_batch_source
from bem.ema import EMA
from bem.evaluation import Evaluator
from bem.files import write_json_atomic, write_text_atomic
from bem.Logger import CompositeLogger, DefaultLogger, Logger
from bem.loggers import check_logger_class, make_logger
from bem.protocol import ExperimentInit
from bem.sections import bem_sections
from bem.training import Trainer, TrainState

logger = logging.getLogger(__name__)

__all__ = ["Experiment", "resolve_device"]

# Files of a previous run that a fresh run in the same folder replaces.
_RUN_FILES = (
    "metrics.jsonl",
    "eval_results.json",
    "losses.json",
    "mlflow_run.json",
    "neptune_run.json",
    "loss_curve.png",
)
# Outputs of evaluations (see bem.evaluation), which a fresh run replaces too: plots, sample
# tensors and, for image data, folders of sample PNG files.
# TensorBoard's folder goes too, whether or not the new run logs there.
_OUTPUT_PATTERNS = (
    "scatter_epoch*",
    "survival_epoch*",
    "samples_epoch*",
    "reverse_epoch*",
    "tb",
)
# Offsets from the run seed of the independent random streams.
_DATA_ORDER_OFFSET, _NOISE_OFFSET, _EVAL_OFFSET = 1, 2, 3


def resolve_device(name: str) -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into a usable device.

    Raises:
        ValueError: for an unknown device name or a CUDA device that is not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(
            f"run.device = {name!r} is not a torch device; use auto, cpu or cuda"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"run.device = {name!r} but CUDA is not available; use cpu or auto")
    return device


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class Experiment:
    """A training and evaluation run of one config in one folder.

    Args:
        checkpoint_dir: the run folder, ``models/<name>``.
        p: the config dict (from YAML plus overrides); validated here.
        logger: an extra :class:`bem.Logger.Logger`; the default console and ``metrics.jsonl``
            logger is always on.
        init: the method package's hand-over, see :class:`bem.protocol.ExperimentInit`.
        overwrite: let a fresh run replace the checkpoints and results of an earlier run in
            the same folder; without it such a run raises ``FileExistsError`` before writing.

    Raises:
        bem.config.ConfigError: if ``p`` is invalid.
    """

    def __init__(
        self,
        checkpoint_dir: str | Path,
        p: Mapping[str, Any],
        logger: Logger | None = None,
        *,
        init: ExperimentInit,
        overwrite: bool = False,
    ) -> None:
        self.run_dir = Path(checkpoint_dir)
        self.overwrite = bool(overwrite)
        self.init = init
        self.config = init.schema().parse(p)
        self.p = self.config.p
        self.extra_logger = logger
        self.history: dict[str, list[float]] = {"loss": [], "grad_norm": []}
        # Losses of the optimizer steps run by this object (not saved in checkpoints).
        self._step_losses: list[float] = []
        # Tracker loggers built ahead of the run folder by build_trackers().
        self._trackers: list[Logger] = []
        # Epoch whose evaluation is under way or was interrupted, for the caller's report.
        self.evaluating_epoch: int | None = None
        self._prepared = False
        self._folder_open = False
        self._resumed = False

    def print_parameters(self) -> str:
        """Log the resolved config as YAML and return that text."""
        text = self.config.to_yaml()
        logger.info("run folder: %s\nresolved config:\n%s", self.run_dir, text.rstrip())
        return text

    @property
    def epoch(self) -> int:
        """Completed training epochs."""
        return self.trainer.state.epoch

    def prepare(self) -> None:
        """Seed the random generators and build data, method, models, optimizers and EMAs.

        Writes nothing, so that invalid values found while building leave no trace.
        """
        run, training = self.config.run, self.config.training
        self.device = resolve_device(run.device)
        if run.threads is not None:
            torch.set_num_threads(run.threads)
        self.seed = self.config.seed
        if self.seed is None:
            self.seed = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
            logger.info("seed is null: drew seed %d", self.seed)
        _seed_everything(self.seed)

        self.data = self.init.init_data(self.config, self.seed)
        self.method = self.init.init_method(self.config, self.device)
        self.models = self.init.init_models(self.config, self.data.item_shape, self.device)
        self.optimizers, self.lr_schedules = self.init.init_optimizers(self.config, self.models)
        self.emas = {
            name: [EMA(model, rate, training.ema_schedule) for rate in training.ema_rates]
            for name, model in self.models.items()
        }

        self.batches = make_batch_source(
            self.data.train,
            training.batch_size,
            self.seed + _DATA_ORDER_OFFSET,
            self.device,
            num_workers=self.data.num_workers,
        )
        self.noise_generator = torch.Generator(device=self.device)
        self.noise_generator.manual_seed(self.seed + _NOISE_OFFSET)
        self.trainer = Trainer(
            self._loss,
            self.models,
            self.optimizers,
            self.lr_schedules,
            self.emas,
            self.batches,
            grad_clip=training.grad_clip,
            n_max_batch=training.n_max_batch,
            nonfinite_loss=training.nonfinite_loss,
            progress=run.progress,
        )

        # Tracker loggers join in _open_run_folder, once the run folder exists and it is known
        # whether this run resumes another; a user's class is imported now, while a wrong spec
        # can still fail before anything is written.
        for spec in self.config.logger.trackers:
            check_logger_class(spec)
        self._default_logger = DefaultLogger(self.run_dir)
        sinks: list[Logger] = [self._default_logger]
        if self.extra_logger is not None:
            sinks.append(self.extra_logger)
        self.sink = CompositeLogger(sinks)
        self.evaluator = Evaluator(
            self.run_dir,
            _reference_tensor(self.data.test, self.config.eval.nsamples),
            self.data.kind,
            self.data.item_shape,
            self.config.eval,
            self.sink,
            progress=run.progress,
            metrics=self.data.metrics,
        )
        n_params = sum(p.numel() for m in self.models.values() for p in m.parameters())
        logger.info(
            "prepared %d model(s), %d parameters, on %s", len(self.models), n_params, self.device
        )
        self._prepared = True

    def _loss(self, models: Mapping[str, nn.Module], batch: torch.Tensor) -> torch.Tensor:
        return self.method.loss(models, batch, generator=self.noise_generator)

    def _require_prepared(self) -> None:
        if not self._prepared:
            raise RuntimeError("call Experiment.prepare() first")

    def previous_run_files(self) -> list[Path]:
        """Return the files (and sample folders) of an earlier run that a fresh run in this
        folder would replace: checkpoints, logs, results and evaluation outputs."""
        if self._resumed or not self.run_dir.exists():
            return []
        stale = [self.run_dir / n for n in _RUN_FILES if (self.run_dir / n).exists()]
        outputs = sorted({p for pattern in _OUTPUT_PATTERNS for p in self.run_dir.glob(pattern)})
        return list(list_checkpoints(self.run_dir).values()) + stale + outputs

    def check_run_folder(self) -> None:
        """Raise ``FileExistsError`` if a fresh run would replace an earlier run's files.

        Called before anything is written, unless the experiment was built with
        ``overwrite=True``; a resumed run continues the folder instead.
        """
        stale = self.previous_run_files()
        if stale and not self.overwrite:
            count = f"{len(stale)} file" + ("s" if len(stale) > 1 else "")
            raise FileExistsError(
                f"{self.run_dir} already contains a run ({count}, e.g. {stale[0].name});"
                " continue it with --resume, replace it with --overwrite, or choose another"
                " --name"
            )

    def _open_run_folder(self, write_config: bool = True, purge_step: int | None = None) -> None:
        """Create the run folder, write ``config.yml`` and start the loggers (once).

        Evaluation of a loaded checkpoint passes ``write_config=False``, so the config of
        the training run stays in place.
        """
        if self._folder_open:
            return
        self.check_run_folder()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        stale = self.previous_run_files()
        if stale:
            logger.warning("--overwrite: removing the previous run's %d outputs", len(stale))
            for path in stale:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        if write_config or not (self.run_dir / "config.yml").exists():
            write_text_atomic(self.run_dir / "config.yml", self.config.to_yaml())
        self.sink.loggers.extend(self._trackers or self.build_trackers(purge_step))
        self._trackers = []
        if purge_step is not None:
            dropped = self._default_logger.purge_from(purge_step)
            if dropped:
                logger.info(
                    "dropped %d records of epochs %d and later from metrics.jsonl: the"
                    " interrupted run logged them after its last checkpoint",
                    dropped,
                    purge_step,
                )
        self.sink.initialize(self.p)
        self._folder_open = True

    def build_trackers(self, purge_step: int | None = None) -> list[Logger]:
        """Build the tracker loggers of ``logger.trackers`` without starting them.

        ``purge_step`` is the first epoch a resumed training run logs again (``None`` for a
        fresh run or an evaluation); see :func:`bem.loggers.make_logger`.

        The constructors check their packages and settings (Neptune's project and token) and
        write nothing. A caller can therefore run this among its input checks, after
        :meth:`load`, and the run folder then uses these loggers instead of building its own.

        Raises:
            ImportError: if a tracker's package is missing.
            ValueError: if a tracker's settings are invalid.
        """
        self._require_prepared()
        self._trackers = [
            make_logger(spec, self.run_dir, self.p, resume=self._resumed, purge_step=purge_step)
            for spec in self.config.logger.trackers
        ]
        return self._trackers

    def save(self, curr_epoch: int | None = None) -> Path:
        """Write the checkpoint of the completed epochs and return its path.

        Args:
            curr_epoch: must equal the completed epochs when given (kept from the original
                interface); the file is ``checkpoint_<epoch>.pt``.
        """
        self._require_prepared()
        epoch = self.trainer.state.epoch
        if curr_epoch is not None and curr_epoch != epoch:
            raise ValueError(f"save(curr_epoch={curr_epoch}) but {epoch} epochs are completed")
        self._open_run_folder()
        state = {
            "epoch": epoch,
            "step": self.trainer.state.step,
            "models": {name: model.state_dict() for name, model in self.models.items()},
            "ema": {name: [e.state_dict() for e in emas] for name, emas in self.emas.items()},
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "lr_schedules": {
                name: None if s is None else s.state_dict() for name, s in self.lr_schedules.items()
            },
            "rng": capture_rng_state(self._generators()),
            "config": self.p,
            "extra": {
                "seed": self.seed,
                "skipped_batches": self.trainer.state.skipped_batches,
                "history": self.history,
            },
        }
        path = save_checkpoint(checkpoint_path(self.run_dir, epoch), state)
        write_json_atomic(self.run_dir / "losses.json", self.history)
        logger.info("saved checkpoint %s", path)
        return path

    def _generators(self) -> dict[str, torch.Generator]:
        return {"data_order": self.batches.generator, "noise": self.noise_generator}

    def load(self, epoch: int | None = None) -> int:
        """Restore the checkpoint of ``epoch`` (default: the latest) and return its epoch.

        Raises:
            CheckpointError: if there is no such checkpoint, the file is unreadable or it
                does not match the models built from the config.
        """
        self._require_prepared()
        available = list_checkpoints(self.run_dir)
        if not available:
            raise CheckpointError(f"no checkpoint found in {self.run_dir}")
        if epoch is None:
            epoch = max(available)
        if epoch not in available:
            raise CheckpointError(
                f"no checkpoint for epoch {epoch} in {self.run_dir}; available epochs: "
                + ", ".join(str(e) for e in available)
            )
        path = available[epoch]
        state = load_checkpoint(path, map_location=self.device)
        if int(state["epoch"]) != epoch:
            raise CheckpointError(
                f"{path} contains epoch {state['epoch']}, not {epoch}, so it was renamed or"
                f" copied; rename it to checkpoint_{state['epoch']}.pt"
            )
        self._warn_config_changes(state.get("config", {}), path)
        try:
            for name, model in self.models.items():
                model.load_state_dict(state["models"][name])
                self._load_emas(name, state["ema"].get(name, []), model)
                self.optimizers[name].load_state_dict(state["optimizers"][name])
                schedule = self.lr_schedules.get(name)
                stored_schedule = state["lr_schedules"].get(name)
                if schedule is not None and stored_schedule is not None:
                    schedule.load_state_dict(stored_schedule)
        except (KeyError, RuntimeError, ValueError) as error:
            # torch lists every mismatched tensor; the first line names the module.
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            detail = "; ".join(lines[:2])[:240]
            raise CheckpointError(
                f"checkpoint {path} does not match the models built from the config ({detail});"
                " load it with the config the run was trained with"
            ) from None
        restore_rng_state(state["rng"], self._generators())
        extra = state.get("extra", {})
        self.trainer.state = TrainState(
            epoch=int(state["epoch"]),
            step=int(state["step"]),
            skipped_batches=int(extra.get("skipped_batches", 0)),
        )
        self.history = {k: list(v) for k, v in extra.get("history", self.history).items()}
        self._resumed = True
        logger.info("loaded %s (epoch %d, step %d)", path, state["epoch"], state["step"])
        return int(state["epoch"])

    def _load_emas(self, name: str, stored: list[dict], model: nn.Module) -> None:
        by_rate = {s["rate"]: s for s in stored}
        for index, ema in enumerate(self.emas[name]):
            if ema.rate in by_rate:
                ema.load_state_dict(by_rate[ema.rate])
            else:
                logger.warning("no EMA at rate %g in the checkpoint; it restarts now", ema.rate)
                self.emas[name][index] = EMA(model, ema.rate, ema.schedule)
        self.trainer.emas[name] = self.emas[name]

    def _warn_config_changes(self, stored: Mapping[str, Any], path: Path) -> None:
        # Sections that define the model and the process; run, eval and logger may change.
        skip = {"run", "eval", "logger"}
        changed = [
            key
            for key in sorted(set(stored) | set(self.p))
            if key not in skip and stored.get(key) != self.p.get(key)
        ]
        if changed:
            logger.warning(
                "config differs from the one stored in %s in: %s", path, ", ".join(changed)
            )

    def run(self) -> dict[str, Any]:
        """Train up to ``run.epochs``, evaluating and saving on schedule.

        The last epoch is always saved, and evaluated when ``run.eval_freq`` is set. Each
        checkpoint is written before that epoch's evaluation.

        Returns:
            summary: ``epoch``, ``step``, ``loss`` (of the last epoch), ``checkpoint`` path,
            ``run_dir`` and ``eval`` (the results of the last evaluation, or None).

        Raises:
            bem.training.NonFiniteLossError: on a NaN or infinite loss in ``"raise"`` mode;
                nothing is saved for the failing epoch.
        """
        self._require_prepared()
        # A resumed run hides the tracker values logged after its checkpoint.
        self._open_run_folder(purge_step=self.epoch + 1 if self._resumed else None)
        run = self.config.run
        if self.epoch >= run.epochs:
            logger.info("%d epochs already completed; run.epochs = %d", self.epoch, run.epochs)
        if self.epoch == 0:
            n_params = sum(p.numel() for m in self.models.values() for p in m.parameters())
            self.sink.log("parameters", n_params)
        last_eval, checkpoint = None, None
        while self.epoch < run.epochs:
            stats = self.trainer.train_epoch()
            epoch = self.epoch
            self.history["loss"].append(stats.loss)
            self.history["grad_norm"].append(stats.grad_norm)
            self._step_losses.extend(stats.step_losses)
            self.sink.set_values(stats.as_dict(), step=epoch)

            is_last = epoch == run.epochs
            # Save before evaluating, so that a failing evaluation never costs the checkpoint.
            if is_last or (run.checkpoint_freq is not None and epoch % run.checkpoint_freq == 0):
                checkpoint = self.save()
            if run.eval_freq is not None and (epoch % run.eval_freq == 0 or is_last):
                last_eval = self.evaluate()
        return {
            "epoch": self.epoch,
            "step": self.trainer.state.step,
            "loss": self.history["loss"][-1] if self.history["loss"] else None,
            "checkpoint": checkpoint,
            "run_dir": self.run_dir,
            "eval": last_eval,
        }

    def model_variants(self) -> dict[str, dict[str, nn.Module]]:
        """Return the trained models and, when ``eval.ema`` is true, each EMA copy by rate."""
        variants = {"model": dict(self.models)}
        if self.config.eval.ema:
            for index, rate in enumerate(self.config.training.ema_rates):
                variants[f"ema_{rate:g}"] = {
                    name: self.emas[name][index].module for name in self.models
                }
        return variants

    def evaluate(
        self,
        nsamples: int | None = None,
        animate: bool | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Generate from every model variant, score against held-out data and save the results.

        Args:
            nsamples: samples per variant (default ``eval.nsamples``).
            animate: save a GIF of the reverse process (default ``eval.animate``).

        Returns:
            variant name to metrics, also stored in ``eval_results.json`` under the epoch (see
            :mod:`bem.evaluation` for evaluations of one epoch under several settings).
        """
        self._require_prepared()
        self._open_run_folder(write_config=not self._resumed)
        bem_names = set(bem_sections())
        settings = {k: v for k, v in self.p.items() if k not in bem_names}
        # Left set when the evaluation is interrupted, so that the caller can say which.
        self.evaluating_epoch = self.epoch
        results = self.evaluator.evaluate(
            self.method,
            self.model_variants(),
            self.epoch,
            seed=self.seed + _EVAL_OFFSET,
            nsamples=nsamples,
            animate=animate,
            settings=settings,
        )
        self.evaluating_epoch = None
        return results

    def terminate(self) -> None:
        """Plot the loss curve (if this object trained) and stop the loggers."""
        if not self._folder_open:
            return
        losses = [v for v in self.history["loss"] if v == v]  # drops NaN (all-skipped epochs)
        # One epoch gives one point: the curve then shows that session's optimizer steps.
        curve, unit = (losses, "epoch") if len(losses) >= 2 else (self._step_losses, "step")
        # Only a session that trained redraws the curve: evaluating an older checkpoint must
        # not replace it with that checkpoint's shorter history.
        if self._step_losses and len(curve) >= 2:
            from bem import plots

            path = self.run_dir / "loss_curve.png"
            title = f"training loss of {self.run_dir.name}, per {unit}"
            plots.loss_curve(curve, path, xlabel=unit, title=title)
            self.sink.log_figure("loss_curve", path)
        self.sink.stop()
        self._folder_open = False


def _reference_tensor(test: Any, n: int) -> torch.Tensor:
    """Return held-out data as a tensor: as is for 2D data, the first ``n`` items otherwise."""
    if isinstance(test, torch.Tensor):
        return test
    items = [test[i] for i in range(min(n, len(test)))]
    return torch.stack([item[0] if isinstance(item, tuple | list) else item for item in items])
