"""Tracker loggers (TensorBoard, MLflow, Neptune or a user's class) and their factory.

:func:`make_logger` turns a spec string into a :class:`bem.Logger.Logger`:

- ``tensorboard``: :class:`bem.loggers.tensorboard.TensorBoardLogger`, events in ``<run_dir>/tb``;
- ``mlflow``: :class:`bem.loggers.mlflow.MLflowLogger`, a local or SQLite tracking store;
- ``neptune``: ``dlpm.NeptuneLogger:NeptuneLogger``, imported by that path only when requested;
- a name registered with :func:`bem.Logger.register_logger`;
- ``module.path:ClassName``: a user's subclass of :class:`bem.Logger.Logger`.

The tracker modules are imported only when their logger is built, because ``mlflow`` and
``torch.utils.tensorboard`` take seconds to import.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bem.Logger import Logger, available_loggers
from bem.Logger import make_logger as make_registered_logger
from bem.loggers.safe import SafeLogger

__all__ = [
    "BUILTIN_LOGGERS",
    "SafeLogger",
    "check_logger_class",
    "check_logger_spec",
    "load_logger_class",
    "make_logger",
]

# Built-in trackers by name, as "module:Class" import paths, so that importing bem.loggers
# imports none of them (and bem never imports dlpm unless the user asks for neptune).
BUILTIN_LOGGERS: dict[str, str] = {
    "tensorboard": "bem.loggers.tensorboard:TensorBoardLogger",
    "mlflow": "bem.loggers.mlflow:MLflowLogger",
    "neptune": "dlpm.NeptuneLogger:NeptuneLogger",
}

_MODULE_PATH = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
_CLASS_SPEC = re.compile(rf"{_MODULE_PATH}:[A-Za-z_][A-Za-z0-9_]*")


def check_logger_spec(spec: str) -> str:
    """Check the form of a logger spec without importing anything, and return it.

    Accepted: a built-in name, a registered name, or ``module.path:ClassName``.

    Raises:
        ValueError: for any other string.
    """
    if spec in BUILTIN_LOGGERS or spec in available_loggers() or _CLASS_SPEC.fullmatch(spec):
        return spec
    names = ", ".join(sorted(set(BUILTIN_LOGGERS) | set(available_loggers())))
    raise ValueError(f"invalid logger {spec!r}; use one of {names} or module.path:ClassName")


def load_logger_class(path: str) -> type[Logger]:
    """Import ``module.path:ClassName`` and return the class.

    Raises:
        ValueError: if the spec is malformed, or the class is missing or not a subclass
            of :class:`bem.Logger.Logger`.
        ImportError: if the module cannot be imported (the message names the module).
    """
    if not _CLASS_SPEC.fullmatch(path):
        raise ValueError(f"invalid logger class {path!r}; expected module.path:ClassName")
    module_name, class_name = path.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is not None and module_name.startswith(error.name):
            raise ImportError(
                f"logger module {module_name!r} not found; check the spelling and that its "
                "folder is on PYTHONPATH"
            ) from error
        raise  # the module exists but one of its own imports is missing
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"module {module_name!r} has no class {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Logger)):
        raise ValueError(f"{path} is not a subclass of bem.Logger.Logger")
    return cls


def check_logger_class(spec: str) -> None:
    """Import the class behind a ``module.path:ClassName`` spec, so that a wrong spec fails
    before a run writes anything. Other specs need no import here.

    Raises:
        ValueError: if the module cannot be imported, or the class is missing or not a
            subclass of :class:`bem.Logger.Logger`.
    """
    check_logger_spec(spec)
    if spec in BUILTIN_LOGGERS or spec in available_loggers():
        return
    try:
        load_logger_class(spec)
    except ImportError as error:
        raise ValueError(f"invalid logger {spec!r}: {error}") from None


def make_logger(
    spec: str,
    run_dir: str | Path,
    p: Mapping[str, Any] | None = None,
    *,
    resume: bool = False,
    purge_step: int | None = None,
    safe: bool = True,
) -> Logger:
    """Build the logger named by ``spec`` for the run folder ``run_dir``.

    The class is called with those of ``run_dir`` (a Path), ``p``, ``resume`` and
    ``purge_step`` that its ``__init__`` accepts by name (all of them if it takes
    ``**kwargs``), so a user's class may take any of them or none.

    Args:
        spec: ``tensorboard``, ``mlflow``, ``neptune``, a registered name, or
            ``module.path:ClassName``.
        run_dir: the run folder, ``models/<name>``.
        p: the resolved config; the logger receives it again in ``initialize(p)``.
        resume: True when the run continues from a checkpoint or evaluates a saved one; the
            tracker then continues its earlier history where it supports that.
        purge_step: when resuming training, the first step (epoch) the run logs again; see
            :class:`bem.loggers.tensorboard.TensorBoardLogger`.
        safe: wrap the logger in :class:`SafeLogger`, so that an error while logging is
            reported once and disables this logger instead of stopping the run. Errors in the
            constructor (a missing package, a missing variable) are raised either way.

    Returns:
        the logger, not yet initialized.

    Raises:
        ValueError: for an invalid spec or a class that is not a Logger subclass.
        ImportError: if the module of the class, or a tracker package, is missing.
    """
    check_logger_spec(spec)
    run_dir = Path(run_dir)
    if spec in BUILTIN_LOGGERS:
        instance = _construct(
            load_logger_class(BUILTIN_LOGGERS[spec]), run_dir, p, resume, purge_step
        )
    elif spec in available_loggers():
        instance = make_registered_logger(spec, run_dir)
    else:
        instance = _construct(load_logger_class(spec), run_dir, p, resume, purge_step)
    return SafeLogger(instance, name=spec) if safe else instance


def _construct(
    cls: type[Logger],
    run_dir: Path,
    p: Mapping[str, Any] | None,
    resume: bool,
    purge_step: int | None,
) -> Logger:
    offered = {"run_dir": run_dir, "p": p, "resume": resume, "purge_step": purge_step}
    parameters = inspect.signature(cls).parameters
    if any(par.kind is inspect.Parameter.VAR_KEYWORD for par in parameters.values()):
        return cls(**offered)
    accepted = {
        name: value
        for name, value in offered.items()
        if name in parameters and parameters[name].kind is not inspect.Parameter.POSITIONAL_ONLY
    }
    return cls(**accepted)
