"""MLflow tracker: params, metrics with steps, and figures and the config as artifacts.

The tracking URI is, in order: the ``tracking_uri`` argument, ``MLFLOW_TRACKING_URI`` (or
``mlflow.set_tracking_uri``), then MLflow's own default, which is ``./mlruns`` up to MLflow
2.x and ``sqlite:///mlflow.db`` in the working folder in recent 3.x releases such as 3.17
(``./mlruns`` still when it already contains experiments). A local folder or a
``sqlite:///`` file needs no server.

Importing this module sets ``MLFLOW_DISABLE_TELEMETRY=true`` unless the variable is already
set, because MLflow 3.x (read in the 3.17 source) otherwise starts a usage-telemetry client
on import, which fetches its settings from MLflow's servers. With a local or SQLite store,
logging opens no network connection.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

# Set before the first import of mlflow: the telemetry client starts during that import.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
import yaml  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.utils import validation  # noqa: E402

from bem.files import write_json_atomic  # noqa: E402
from bem.Logger import Logger  # noqa: E402
from bem.loggers.values import (  # noqa: E402
    artifact_folder,
    flatten_params,
    image_array,
    param_text,
    plain_config,
    scalar_items,
)

logger = logging.getLogger(__name__)

__all__ = ["MLflowLogger", "RUN_STATE_FILE", "resolve_tracking_uri"]

# File in the run folder that stores the MLflow run id, so that a resumed run continues it.
RUN_STATE_FILE = "mlflow_run.json"
# Limits of the installed MLflow: entries per log_batch call and value lengths.
_MAX_METRICS = validation.MAX_METRICS_PER_BATCH
_MAX_PARAMS = _MAX_TAGS = validation.MAX_PARAMS_TAGS_PER_BATCH
_MAX_PARAM_LENGTH = validation.MAX_PARAM_VAL_LENGTH
_MAX_TAG_LENGTH = validation.MAX_TAG_VAL_LENGTH


def _stop_telemetry_started_earlier() -> None:
    # If mlflow was imported before this module, its telemetry client may already exist.
    # Rebuilding it under MLFLOW_DISABLE_TELEMETRY=true replaces it with None.
    try:
        from mlflow.telemetry import get_telemetry_client, set_telemetry_client
    except ImportError:  # MLflow 2.x has no telemetry module
        return
    disabled = os.environ.get("MLFLOW_DISABLE_TELEMETRY", "").lower() in ("true", "1")
    if disabled and get_telemetry_client() is not None:
        set_telemetry_client()


_stop_telemetry_started_earlier()


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """Return the tracking URI to use: the argument, else MLflow's current one.

    MLflow's current URI is the one given to ``mlflow.set_tracking_uri``, else
    ``MLFLOW_TRACKING_URI``, else MLflow's default. For a local folder store this also sets
    ``MLFLOW_ALLOW_FILE_STORE=true`` (unless set), which MLflow 3.17 requires before it opens
    one, because choosing a folder URI is an explicit request for that store.
    """
    uri = tracking_uri or mlflow.get_tracking_uri()
    if urlparse(uri).scheme in ("", "file"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


class MLflowLogger(Logger):
    """Record a run in an MLflow tracking store through ``MlflowClient``.

    What each call records:

    - :meth:`initialize`: the flattened config (``data.alpha``, ...) as params, and the config
      file ``<run_dir>/config.yml`` (or a YAML dump of ``p``) as the artifact ``config.yml``.
    - :meth:`log` and :meth:`set_values`: numbers as metrics at ``step`` (0 when the step is
      None; sequences as ``key/0``, ``key/1``, ...), strings as tags.
    - :meth:`log_figure` and :meth:`log_image`: the file as an artifact under
      ``figures/<key>/step_<step>/`` or ``images/<key>/step_<step>/``; :meth:`log_image` also
      takes a ``(B, C, H, W)`` tensor in [-1, 1] and stores it as a PNG grid.

    The run id is kept in ``<run_dir>/mlflow_run.json``. With ``resume``, the logger continues
    that run, so metrics append to its history. If the current store does not have that run,
    the logger starts a new one.

    Args:
        run_dir: the run folder.
        tracking_uri: tracking store, see :func:`resolve_tracking_uri`.
        experiment_name: MLflow experiment; default ``MLFLOW_EXPERIMENT_NAME``, else
            ``"Default"``. Created when missing.
        run_name: name shown in the MLflow UI; default the run folder's name.
        resume: continue the run recorded in ``mlflow_run.json``.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        tracking_uri: str | None = None,
        experiment_name: str | None = None,
        run_name: str | None = None,
        resume: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.experiment_name = (
            experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "Default"
        )
        self.run_name = run_name or self.run_dir.resolve().name
        self.resume = resume
        self.client: MlflowClient | None = None
        self.run_id: str | None = None
        self._skipped_keys: set[str] = set()

    @property
    def state_path(self) -> Path:
        """The JSON file that stores the MLflow run id of this run folder."""
        return self.run_dir / RUN_STATE_FILE

    def initialize(self, p: Mapping[str, Any]) -> None:
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        self.run_id = self._stored_run_id() if self.resume else None
        if self.run_id is not None:
            self.client.update_run(self.run_id, status="RUNNING")
            logger.info("MLflow: continuing run %s in %s", self.run_id, self.tracking_uri)
        else:
            self.run_id = self._start_run()
        self.log_params(p)
        self._log_config(p)

    def _start_run(self) -> str:
        assert self.client is not None
        experiment_id = self._experiment_id()
        tags = {"bem.run_dir": str(self.run_dir.resolve())}
        run = self.client.create_run(experiment_id, run_name=self.run_name, tags=tags)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "run_id": run.info.run_id,
            "experiment_id": experiment_id,
            "tracking_uri": self.tracking_uri,
        }
        write_json_atomic(self.state_path, state)
        logger.info("MLflow: started run %s in %s", run.info.run_id, self.tracking_uri)
        return run.info.run_id

    def _experiment_id(self) -> str:
        assert self.client is not None
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            return self.client.create_experiment(self.experiment_name)
        if experiment.lifecycle_stage == "deleted":
            raise ValueError(
                f"MLflow experiment {self.experiment_name!r} is deleted; restore it or set "
                "MLFLOW_EXPERIMENT_NAME to another name"
            )
        return experiment.experiment_id

    def _stored_run_id(self) -> str | None:
        """Return the run id in ``mlflow_run.json`` if the current store has that run."""
        assert self.client is not None
        try:
            run_id = json.loads(self.state_path.read_text(encoding="utf-8"))["run_id"]
        except FileNotFoundError:
            logger.info("MLflow: no %s in %s, starting a new run", RUN_STATE_FILE, self.run_dir)
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.warning("MLflow: unreadable %s (%s), starting a new run", self.state_path, error)
            return None
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            logger.warning(
                "MLflow: run %s from %s is not in %s, starting a new run",
                run_id,
                self.state_path,
                self.tracking_uri,
            )
            return None
        if run.info.lifecycle_stage == "deleted":
            logger.warning("MLflow: run %s is deleted, starting a new run", run_id)
            return None
        return run_id

    def _require_run(self) -> tuple[MlflowClient, str]:
        if self.client is None or self.run_id is None:
            raise RuntimeError("MLflowLogger.initialize(p) must be called before logging")
        return self.client, self.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        client, run_id = self._require_run()
        stored = client.get_run(run_id).data.params
        new, changed = [], []
        for key, value in flatten_params(params).items():
            text = param_text(value)[:_MAX_PARAM_LENGTH]
            if key not in stored:
                new.append(Param(key, text))
            elif stored[key] != text:
                changed.append(key)
        if changed:
            # MLflow params are immutable once logged; the resumed run keeps the first values.
            logger.warning(
                "MLflow: params changed since run %s started, kept the stored values: %s",
                run_id,
                ", ".join(changed),
            )
        for start in range(0, len(new), _MAX_PARAMS):
            client.log_batch(run_id, params=new[start : start + _MAX_PARAMS])

    def _log_config(self, p: Mapping[str, Any]) -> None:
        client, run_id = self._require_run()
        config_file = self.run_dir / "config.yml"
        if config_file.is_file():
            client.log_artifact(run_id, str(config_file))
            return
        client.log_text(run_id, yaml.safe_dump(plain_config(p), sort_keys=False), "config.yml")

    def log(self, key: str, value: Any, step: int | None = None) -> None:
        self.set_values({key: value}, step)

    def set_values(self, values: Mapping[str, Any], step: int | None = None) -> None:
        client, run_id = self._require_run()
        timestamp = int(time.time() * 1000)
        metrics, tags = [], []
        for key, value in values.items():
            if isinstance(value, str):
                tags.append(RunTag(key, value[:_MAX_TAG_LENGTH]))
                continue
            items = list(scalar_items(key, value))
            if not items:
                self._skip(key, value)
            # MLflow requires an integer step; values without one go to step 0.
            metrics += [Metric(name, scalar, timestamp, step or 0) for name, scalar in items]
        for start in range(0, len(metrics), _MAX_METRICS):
            client.log_batch(run_id, metrics=metrics[start : start + _MAX_METRICS])
        for start in range(0, len(tags), _MAX_TAGS):
            client.log_batch(run_id, tags=tags[start : start + _MAX_TAGS])

    def _skip(self, key: str, value: Any) -> None:
        if key not in self._skipped_keys:
            self._skipped_keys.add(key)
            logger.warning(
                "MLflow: skipped %s, a %s is neither a number nor a string",
                key,
                type(value).__name__,
            )

    def log_figure(self, key: str, path: str | Path, step: int | None = None) -> None:
        client, run_id = self._require_run()
        client.log_artifact(run_id, str(path), _artifact_path("figures", key, step))

    def log_image(self, key: str, path: Any, step: int | None = None) -> None:
        """Store an image file, or a ``(B, C, H, W)`` tensor in [-1, 1] as a PNG grid."""
        client, run_id = self._require_run()
        artifact_path = _artifact_path("images", key, step)
        if isinstance(path, str | Path):
            client.log_artifact(run_id, str(path), artifact_path)
            return
        from PIL import Image

        with tempfile.TemporaryDirectory() as folder:
            grid = Path(folder) / "grid.png"
            Image.fromarray(image_array(path)).save(grid)
            client.log_artifact(run_id, str(grid), artifact_path)

    def stop(self) -> None:
        if self.client is not None and self.run_id is not None:
            self.client.set_terminated(self.run_id)
        self.client = None


def _artifact_path(kind: str, key: str, step: int | None) -> str:
    folder = f"{kind}/{artifact_folder(key)}"
    return folder if step is None else f"{folder}/step_{step}"
