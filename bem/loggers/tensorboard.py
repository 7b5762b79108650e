"""TensorBoard tracker: scalars, images, figures and the config, in ``<run_dir>/tb``.

View with ``tensorboard --logdir models`` (one TensorBoard run per run folder).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from torch.utils.tensorboard import SummaryWriter

from bem.Logger import Logger
from bem.loggers.values import (
    flatten_params,
    image_array,
    param_text,
    plain_config,
    scalar_items,
)

logger = logging.getLogger(__name__)

__all__ = ["TensorBoardLogger"]

_EVENT_FILE_PREFIX = "events.out.tfevents."


class TensorBoardLogger(Logger):
    """Write a run's values to TensorBoard event files with ``SummaryWriter``.

    What each call records:

    - :meth:`log` and :meth:`set_values`: numbers as scalars at ``step`` (sequences of numbers
      as ``key/0``, ``key/1``, ...), strings as text; other values are skipped.
    - :meth:`log_figure` and :meth:`log_image`: the PNG or JPEG file (the last frame of a GIF)
      as an image; :meth:`log_image` also takes a ``(B, C, H, W)`` tensor in [-1, 1] and
      tiles it into a grid.
    - :meth:`log_params`: the config as YAML text under ``config`` and as hyperparameters
      (flattened keys) for the HParams tab.

    Args:
        run_dir: the run folder; events go to ``<run_dir>/tb`` unless ``log_dir`` is given.
        log_dir: folder of the event files.
        resume: True to continue the history in ``log_dir``. False (a fresh run) deletes the
            event files found there first, as a fresh run replaces the files of an earlier
            run in the same folder.
        purge_step: with ``resume``, the first step this session writes. TensorBoard then
            hides the events at ``step >= purge_step`` written earlier, such as the epochs
            logged after the checkpoint that the run resumes from.
        flush_secs: seconds between flushes of the event file to disk.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        log_dir: str | Path | None = None,
        resume: bool = False,
        purge_step: int | None = None,
        flush_secs: int = 30,
    ) -> None:
        self.log_dir = Path(log_dir) if log_dir is not None else Path(run_dir) / "tb"
        self.resume = resume
        self.purge_step = purge_step if resume else None
        self.flush_secs = flush_secs
        self.writer: SummaryWriter | None = None
        self._skipped_keys: set[str] = set()

    def initialize(self, p: Mapping[str, Any]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if not self.resume:
            self._remove_old_events()
        self.writer = SummaryWriter(
            str(self.log_dir), purge_step=self.purge_step, flush_secs=self.flush_secs
        )
        self.log_params(p)
        logger.info(
            "TensorBoard: events in %s; view them with tensorboard --logdir %s",
            self.log_dir,
            self.log_dir,
        )

    def _remove_old_events(self) -> None:
        old = sorted(self.log_dir.glob(_EVENT_FILE_PREFIX + "*"))
        if old:
            logger.warning(
                "fresh run: deleting %d TensorBoard event file(s) of an earlier run in %s",
                len(old),
                self.log_dir,
            )
            for path in old:
                path.unlink()

    def _require_writer(self) -> SummaryWriter:
        if self.writer is None:
            raise RuntimeError("TensorBoardLogger.initialize(p) must be called before logging")
        return self.writer

    def log_params(self, params: Mapping[str, Any]) -> None:
        writer = self._require_writer()
        text = yaml.safe_dump(plain_config(params), sort_keys=False)
        # Four-space indent: TensorBoard renders text as Markdown, and this keeps it verbatim.
        indented = "\n".join("    " + line for line in text.splitlines())
        writer.add_text("config", indented, global_step=self.purge_step)

        hparams = {key: _hparam_value(value) for key, value in flatten_params(params).items()}
        if hparams:
            # run_name "." writes into this run's folder instead of a new timestamped sub-run.
            writer.add_hparams(hparams, {}, run_name=".")

    def log(self, key: str, value: Any, step: int | None = None) -> None:
        writer = self._require_writer()
        if isinstance(value, str):
            writer.add_text(key, value, global_step=step)
            return
        items = list(scalar_items(key, value))
        if not items:
            self._skip(key, value)
        for name, scalar in items:
            writer.add_scalar(name, scalar, global_step=step)

    def log_figure(self, key: str, path: str | Path, step: int | None = None) -> None:
        self.log_image(key, path, step)

    def log_image(self, key: str, path: Any, step: int | None = None) -> None:
        """Record an image file, or a ``(B, C, H, W)`` tensor in [-1, 1] tiled into a grid."""
        writer = self._require_writer()
        writer.add_image(key, image_array(path), global_step=step, dataformats="HWC")

    def _skip(self, key: str, value: Any) -> None:
        if key not in self._skipped_keys:
            self._skipped_keys.add(key)
            logger.warning(
                "TensorBoard: skipped %s, a %s is neither a number nor a string",
                key,
                type(value).__name__,
            )

    def stop(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _hparam_value(value: Any) -> bool | int | float | str:
    # The HParams plugin stores bool, int, float and str only.
    if isinstance(value, bool | int | float | str):
        return value
    return param_text(value)
