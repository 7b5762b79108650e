"""A wrapper that keeps a failing tracker from stopping the run."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bem.Logger import Logger

logger = logging.getLogger(__name__)

__all__ = ["SafeLogger"]


class SafeLogger(Logger):
    """Forward every call to ``inner``; on the first exception, log it once and go silent.

    A tracker can fail in the middle of a run (a full disk, a database lock, a lost
    connection to a tracking server). Metrics are secondary to the training itself, so the
    error is reported once through ``logging`` with the logger's name and the failing call,
    and every later call is skipped: training, evaluation and checkpoints go on.

    Only :class:`Exception` is caught, so ``KeyboardInterrupt`` and ``SystemExit`` still stop
    the run.

    Args:
        inner: the tracker to protect.
        name: name used in the error message (default: the class name of ``inner``).
    """

    def __init__(self, inner: Logger, name: str | None = None) -> None:
        self.inner = inner
        self.name = name or type(inner).__name__
        self.failed = False

    def _call(self, method: str, function: Callable[..., Any], *args: Any) -> None:
        if self.failed:
            return
        try:
            function(*args)
        except Exception as error:  # noqa: BLE001 - a tracker error must not stop training
            self.failed = True
            logger.error(
                "logger %s failed in %s and is disabled for the rest of the run: %s: %s",
                self.name,
                method,
                type(error).__name__,
                error,
                exc_info=logger.isEnabledFor(logging.DEBUG),
            )

    def initialize(self, p: Mapping[str, Any]) -> None:
        self._call("initialize", self.inner.initialize, p)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._call("log_params", self.inner.log_params, params)

    def log(self, key: str, value: Any, step: int | None = None) -> None:
        self._call("log", self.inner.log, key, value, step)

    def set_values(self, values: Mapping[str, Any], step: int | None = None) -> None:
        self._call("set_values", self.inner.set_values, values, step)

    def log_figure(self, key: str, path: str | Path, step: int | None = None) -> None:
        self._call("log_figure", self.inner.log_figure, key, path, step)

    def log_image(self, key: str, path: str | Path, step: int | None = None) -> None:
        self._call("log_image", self.inner.log_image, key, path, step)

    def stop(self) -> None:
        if not self.failed:
            self._call("stop", self.inner.stop)
            return
        # After a failure the tracker may still hold open files: try to close them, quietly,
        # because its error was already reported.
        try:
            self.inner.stop()
        except Exception as error:  # noqa: BLE001 - already reported once
            logger.debug("logger %s failed again in stop: %s", self.name, error)
