"""Neptune tracker: an optional extra, installed with ``pip install -e '.[neptune]'``.

It is also a worked example of a :class:`bem.Logger.Logger` subclass. The project name and the
API token come from the ``NEPTUNE_PROJECT`` and ``NEPTUNE_API_TOKEN`` environment variables
only, never from arguments or files, so that no token ends up in the repository. Select it
with ``--logger neptune``.

Written against the ``neptune`` 1.x client (``neptune.init_run``, ``append``, ``upload``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bem.files import write_json_atomic
from bem.Logger import Logger
from bem.loggers.values import image_array, plain_config, scalar_items

logger = logging.getLogger(__name__)

__all__ = ["NeptuneLogger"]

# File in the run folder that stores the Neptune run id (sys/id), to continue it on resume.
RUN_STATE_FILE = "neptune_run.json"
# Modes of neptune 1.x: async and sync send to the server, offline writes ./.neptune for a later
# `neptune sync`, debug keeps everything in memory. read-only cannot log.
_MODES = ("async", "sync", "offline", "debug")
_SERVER_MODES = ("async", "sync")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif")


def _import_neptune() -> Any:
    try:
        import neptune
    except ImportError:
        raise ImportError(
            "the neptune logger needs the neptune package; install it with "
            "pip install -e '.[neptune]'"
        ) from None
    return neptune


class NeptuneLogger(Logger):
    """Record a run in Neptune under ``metrics/``, ``figures/``, ``images/`` and ``parameters``.

    The Neptune run id is kept in ``<run_dir>/neptune_run.json``; with ``resume`` in a server
    mode the logger continues that run (``init_run(with_id=...)``).

    Args:
        run_dir: the run folder; its name becomes the Neptune run name.
        mode: ``async``, ``sync``, ``offline`` or ``debug``; default ``NEPTUNE_MODE``, else
            ``async``.
        resume: continue the run recorded in ``neptune_run.json``.
        tags: tags of the Neptune run.

    Raises:
        ValueError: for an unknown mode, or in a server mode when ``NEPTUNE_PROJECT`` or
            ``NEPTUNE_API_TOKEN`` is not set.
        ImportError: if the ``neptune`` package is not installed.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        mode: str | None = None,
        resume: bool = False,
        tags: tuple[str, ...] = (),
    ) -> None:
        self.run_dir = Path(run_dir)
        self.mode = mode or os.environ.get("NEPTUNE_MODE") or "async"
        if self.mode not in _MODES:
            raise ValueError(f"Neptune mode {self.mode!r} is invalid; use one of {_MODES}")
        if self.mode in _SERVER_MODES:
            for variable in ("NEPTUNE_PROJECT", "NEPTUNE_API_TOKEN"):
                if not os.environ.get(variable):
                    raise ValueError(
                        f"{variable} is not set; export NEPTUNE_PROJECT=workspace/project and "
                        "NEPTUNE_API_TOKEN=<token>, or set NEPTUNE_MODE=offline"
                    )
        self.resume = resume
        self.tags = tuple(tags)
        self._neptune = _import_neptune()
        self.run: Any = None

    def initialize(self, p: Mapping[str, Any]) -> None:
        options: dict[str, Any] = {
            "project": os.environ.get("NEPTUNE_PROJECT"),
            "api_token": os.environ.get("NEPTUNE_API_TOKEN"),
            "mode": self.mode,
            "name": self.run_dir.resolve().name,
            "tags": list(self.tags),
        }
        stored_id = self._stored_run_id() if self.resume else None
        if stored_id is not None:
            options["with_id"] = stored_id
        self.run = self._neptune.init_run(**options)
        self._store_run_id(stored_id)
        self.log_params(p)
        config_file = self.run_dir / "config.yml"
        if config_file.is_file():
            self.run["config"].upload(str(config_file))

    def _stored_run_id(self) -> str | None:
        if self.mode not in _SERVER_MODES:
            # Neptune resumes a run by id only on the server.
            logger.info("Neptune: %s mode cannot continue a run, starting a new one", self.mode)
            return None
        try:
            return json.loads((self.run_dir / RUN_STATE_FILE).read_text("utf-8"))["run_id"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.warning("Neptune: unreadable %s (%s), starting a new run", RUN_STATE_FILE, error)
            return None

    def _store_run_id(self, stored_id: str | None) -> None:
        if self.mode not in _SERVER_MODES:
            return
        run_id = stored_id or self.run["sys/id"].fetch()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.run_dir / RUN_STATE_FILE, {"run_id": run_id})
        logger.info("Neptune: logging to run %s", run_id)

    def _require_run(self) -> Any:
        if self.run is None:
            raise RuntimeError("NeptuneLogger.initialize(p) must be called before logging")
        return self.run

    def log_params(self, params: Mapping[str, Any]) -> None:
        from neptune.utils import stringify_unsupported

        # Nested sections become Neptune namespaces: parameters/data/alpha, ...
        self._require_run()["parameters"] = stringify_unsupported(plain_config(params))

    def log(self, key: str, value: Any, step: int | None = None) -> None:
        run = self._require_run()
        if isinstance(value, str):
            run[f"metrics/{key}"].append(value, step=step)
            return
        for name, scalar in scalar_items(key, value):
            run[f"metrics/{name}"].append(scalar, step=step)

    def log_figure(self, key: str, path: str | Path, step: int | None = None) -> None:
        run = self._require_run()
        if Path(path).suffix.lower() in _IMAGE_SUFFIXES:
            from neptune.types import File

            run[f"figures/{key}"].append(File(str(path)), step=step)
        else:
            run[f"figures/{key}/step_{step}"].upload(str(path))

    def log_image(self, key: str, path: Any, step: int | None = None) -> None:
        """Record an image file, or a ``(B, C, H, W)`` tensor in [-1, 1] tiled into a grid."""
        from neptune.types import File
        from PIL import Image

        image = File.as_image(Image.fromarray(image_array(path)))
        self._require_run()[f"images/{key}"].append(image, step=step)

    def stop(self) -> None:
        if self.run is not None:
            self.run.stop()
            self.run = None
