"""Metric loggers: a base class, the default console and JSON-lines logger, and a fan-out.

:class:`Logger` is the interface an experiment writes to. Tracker backends (TensorBoard, MLflow,
Neptune) subclass it and override what they support. Every hook has a no-op default, so a
backend that only stores scalars implements :meth:`Logger.log` and nothing else. Register a
backend under a name with :func:`register_logger` so that the config key ``logger.trackers``
and the ``--log`` flag can select it.

The default logger, :class:`DefaultLogger`, is always on: it writes one compact line per call
of :meth:`Logger.set_values` to the ``logging`` module and appends every value to
``metrics.jsonl`` in the run folder.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from bem.files import write_text_atomic

logger = logging.getLogger(__name__)

__all__ = [
    "CompositeLogger",
    "DefaultLogger",
    "Logger",
    "available_loggers",
    "make_logger",
    "register_logger",
]


class Logger:
    """Interface for metric sinks; subclasses override the hooks they support.

    ``step`` is the x-axis of a value: the epoch for per-epoch values, None when the value has
    none (a final summary, for instance).
    """

    def initialize(self, p: Mapping[str, Any]) -> None:
        """Open the sink for a run with resolved config ``p``; the default logs the params."""
        self.log_params(p)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record the run's parameters (the resolved config dict)."""

    def log(self, key: str, value: Any, step: int | None = None) -> None:
        """Record one value (a scalar, a short string or a list of scalars)."""

    def set_values(self, values: Mapping[str, Any], step: int | None = None) -> None:
        """Record several values that share ``step``; the default calls :meth:`log` for each."""
        for key, value in values.items():
            self.log(key, value, step)

    def log_figure(self, key: str, path: str | Path, step: int | None = None) -> None:
        """Record a figure saved at ``path`` (PNG or GIF)."""

    def log_image(self, key: str, path: str | Path, step: int | None = None) -> None:
        """Record an image (a grid of samples, for instance) saved at ``path``."""

    def stop(self) -> None:
        """Flush and close the sink; called once when the experiment terminates."""


_REGISTRY: dict[str, Callable[[Path], Logger]] = {}


def register_logger(name: str, factory: Callable[[Path], Logger]) -> None:
    """Make a tracker backend selectable by ``name``; ``factory(run_dir)`` builds it."""
    if name in _REGISTRY:
        raise ValueError(f"a logger named '{name}' is already registered")
    _REGISTRY[name] = factory


def available_loggers() -> list[str]:
    """Return the names of the registered tracker backends."""
    return sorted(_REGISTRY)


def make_logger(name: str, run_dir: str | Path) -> Logger:
    """Build the registered tracker backend ``name`` for the run folder ``run_dir``.

    Raises:
        ValueError: if no backend is registered under ``name``.
    """
    if name not in _REGISTRY:
        accepted = ", ".join(available_loggers()) or "none registered"
        raise ValueError(f"unknown logger '{name}'; available: {accepted}")
    return _REGISTRY[name](Path(run_dir))


def _json_value(value: Any) -> Any:
    """Turn tensors, numpy scalars and non-finite floats into JSON-safe values."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    elif hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return value


class DefaultLogger(Logger):
    """Console summary line through ``logging`` plus ``metrics.jsonl`` in the run folder.

    Each line of ``metrics.jsonl`` is ``{"key": ..., "value": ..., "step": ..., "time": ...}``
    with ``time`` in seconds since the epoch. The file is appended to, so a resumed run adds
    its values after those of the interrupted run. :meth:`purge_from` first drops what the
    interrupted run logged after its checkpoint.
    """

    def __init__(self, run_dir: str | Path, console: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.console = console
        self._handle = None

    def initialize(self, p: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a", encoding="utf-8")

    def purge_from(self, step: int) -> int:
        """Drop the records of steps ``step`` and later from ``metrics.jsonl``.

        Call it before :meth:`initialize`. Returns how many records were dropped.

        Records without a step, and lines that are not JSON records, are kept.
        """
        if self._handle is not None:
            raise RuntimeError("DefaultLogger.purge_from must be called before initialize")
        if not self.path.is_file():
            return 0
        remaining_lines, dropped = [], 0
        for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True):
            try:
                record_step = json.loads(line).get("step")
            except (ValueError, AttributeError):
                record_step = None
            if isinstance(record_step, int) and record_step >= step:
                dropped += 1
            else:
                remaining_lines.append(line)
        if dropped:
            write_text_atomic(self.path, "".join(remaining_lines))
        return dropped

    def log(self, key: str, value: Any, step: int | None = None) -> None:
        self._write([(key, value)], step)

    def set_values(self, values: Mapping[str, Any], step: int | None = None) -> None:
        self._write(values.items(), step)
        if self.console and values:
            logger.info("%s", _summary_line(values, step))

    def log_figure(self, key: str, path: str | Path, step: int | None = None) -> None:
        self._write([(key, str(path))], step)

    def log_image(self, key: str, path: str | Path, step: int | None = None) -> None:
        self._write([(key, str(path))], step)

    def _write(self, items: Iterable[tuple[str, Any]], step: int | None) -> None:
        if self._handle is None:
            raise RuntimeError("DefaultLogger.initialize(p) must be called before logging")
        now = time.time()
        for key, value in items:
            record = {"key": key, "value": _json_value(value), "step": step, "time": now}
            self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def _summary_line(values: Mapping[str, Any], step: int | None) -> str:
    parts = [] if step is None else [f"epoch {step}"]
    for key, value in values.items():
        value = _json_value(value)
        if isinstance(value, float):
            parts.append(f"{key} {value:.4g}")
        elif isinstance(value, int | str):
            parts.append(f"{key} {value}")
    return " | ".join(parts)


class CompositeLogger(Logger):
    """Forwards every call to each of ``loggers`` in order."""

    def __init__(self, loggers: Iterable[Logger]) -> None:
        self.loggers = list(loggers)

    def initialize(self, p: Mapping[str, Any]) -> None:
        for sink in self.loggers:
            sink.initialize(p)

    def log_params(self, params: Mapping[str, Any]) -> None:
        for sink in self.loggers:
            sink.log_params(params)

    def log(self, key: str, value: Any, step: int | None = None) -> None:
        for sink in self.loggers:
            sink.log(key, value, step)

    def set_values(self, values: Mapping[str, Any], step: int | None = None) -> None:
        for sink in self.loggers:
            sink.set_values(values, step)

    def log_figure(self, key: str, path: str | Path, step: int | None = None) -> None:
        for sink in self.loggers:
            sink.log_figure(key, path, step)

    def log_image(self, key: str, path: str | Path, step: int | None = None) -> None:
        for sink in self.loggers:
            sink.log_image(key, path, step)

    def stop(self) -> None:
        # Stop every sink even if one fails, then re-raise the first failure.
        first_error = None
        for sink in self.loggers:
            try:
                sink.stop()
            except Exception as error:  # noqa: BLE001 - re-raised below after the others stop
                logger.error("logger %s failed to stop: %s", type(sink).__name__, error)
                first_error = first_error or error
        if first_error is not None:
            raise first_error
