"""Tests of the tracker loggers, read back with each tracker's own reader.

TensorBoard events are read with ``EventAccumulator``, MLflow stores (a local folder and a
SQLite file) with ``MlflowClient``. mlflow is imported once, at collection, because the import
takes seconds.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from bem.Logger import Logger
from bem.loggers import SafeLogger, check_logger_spec, load_logger_class, make_logger
from bem.loggers import mlflow as mlflow_logger
from bem.loggers.values import artifact_folder, flatten_params, image_array, scalar_items

# Taken from bem.loggers.mlflow, which must be the first to import mlflow (it turns off
# MLflow's telemetry before that import).
MlflowClient = mlflow_logger.MlflowClient

CONFIG = {
    "data": {"dataset": "sas_grid", "alpha": 1.7, "dims": (2, 3)},
    "training": {"batch_size": 64, "grad_clip": None},
    "seed": 0,
}


def write_png(path, size=(12, 10), color=(200, 30, 30)):
    Image.new("RGB", size, color).save(path)
    return path


class RecordingLogger(Logger):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def log(self, key, value, step=None):
        self.calls.append((key, value, step))


class FailingLogger(RecordingLogger):
    def log(self, key, value, step=None):
        super().log(key, value, step)
        raise OSError(28, "No space left on device")

    def stop(self):
        raise OSError(28, "No space left on device")


@pytest.fixture
def network_attempts(monkeypatch):
    """Refuse and record every IPv4/IPv6 connection and host-name lookup during a test."""
    attempts: list[str] = []
    real_connect = socket.socket.connect

    def guarded_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(f"connect {address}")
            raise OSError("network access is disabled in this test")
        return real_connect(sock, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        attempts.append(f"getaddrinfo {host}")
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    return attempts


# --- values -------------------------------------------------------------------------------


def test_flatten_params_dotted_keys():
    flat = flatten_params(CONFIG)
    assert flat["data.alpha"] == 1.7
    assert flat["training.grad_clip"] is None
    assert flat["seed"] == 0
    assert len(flat) == 6


def test_scalar_items_types():
    assert list(scalar_items("a", torch.tensor(2.5))) == [("a", 2.5)]
    assert list(scalar_items("a", np.float32(0.5))) == [("a", 0.5)]
    assert list(scalar_items("a", True)) == [("a", 1.0)]
    assert list(scalar_items("a", [1, 2])) == [("a/0", 1.0), ("a/1", 2.0)]
    assert list(scalar_items("a", "text")) == []
    assert list(scalar_items("a", {"x": 1})) == []


def test_artifact_folder_stays_inside_root():
    assert artifact_folder("scatter/ema_0.999") == "scatter/ema_0.999"
    assert artifact_folder("../../etc/x y") == "etc/x_y"
    assert artifact_folder("/") == "unnamed"


def test_image_array_grid_shape():
    # 10 images of 8x8 with 8 per row and 2 pixels of padding: 2 rows, 8 columns.
    grid = image_array(torch.zeros(10, 1, 8, 8))
    assert grid.shape == (2 * 10 + 2, 8 * 10 + 2, 3)
    assert grid.dtype == np.uint8
    # 0 in [-1, 1] maps to mid-grey 128 (0.5 * 255 rounded).
    assert grid[2, 2, 0] == 128


def test_image_array_rejects_bad_shape():
    with pytest.raises(ValueError, match="channels"):
        image_array(torch.zeros(2, 2, 4, 4))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        image_array(torch.zeros(4, 4))


# --- factory ------------------------------------------------------------------------------


def test_check_logger_spec_rejects_unknown():
    assert check_logger_spec("tensorboard") == "tensorboard"
    assert check_logger_spec("my_pkg.loggers:Mine") == "my_pkg.loggers:Mine"
    with pytest.raises(ValueError, match="invalid logger 'wandb'"):
        check_logger_spec("wandb")
    with pytest.raises(ValueError, match="invalid logger"):
        make_logger("pkg:Class:extra", "run")


USER_MODULE = """
from bem.Logger import Logger

class NoArguments(Logger):
    def log(self, key, value, step=None):
        self.last = (key, value, step)

class WithRunDir(Logger):
    def __init__(self, run_dir, verbose=False):
        self.run_dir = run_dir
        self.values = []

    def log(self, key, value, step=None):
        self.values.append((key, value, step))

class NotALogger:
    pass
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_trackers.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_trackers"
    sys.modules.pop("my_trackers", None)


def test_user_logger_loaded_and_called(user_module, tmp_path):
    sink = make_logger(f"{user_module}:WithRunDir", tmp_path / "run", CONFIG, safe=False)
    assert type(sink).__name__ == "WithRunDir"
    assert sink.run_dir == tmp_path / "run"
    sink.initialize(CONFIG)
    sink.set_values({"loss": 0.5, "lr": 1e-3}, step=3)
    assert sink.values == [("loss", 0.5, 3), ("lr", 1e-3, 3)]


def test_user_logger_without_init(user_module, tmp_path):
    sink = make_logger(f"{user_module}:NoArguments", tmp_path, CONFIG)
    assert isinstance(sink, SafeLogger)
    sink.log("loss", 1.0, 2)
    assert sink.inner.last == ("loss", 1.0, 2)


def test_user_logger_errors(user_module, tmp_path):
    with pytest.raises(ValueError, match="has no class 'Missing'"):
        make_logger(f"{user_module}:Missing", tmp_path)
    with pytest.raises(ValueError, match="not a subclass of bem.Logger.Logger"):
        make_logger(f"{user_module}:NotALogger", tmp_path)
    with pytest.raises(ImportError, match="'no_such_module_xyz' not found"):
        load_logger_class("no_such_module_xyz:Logger")


def test_import_loads_no_tracker():
    # bem never imports dlpm, and importing the factory must not pay for mlflow or tensorboard.
    code = (
        "import sys, bem.loggers; "
        "print(sorted({'dlpm', 'mlflow', 'tensorboard'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# --- SafeLogger ---------------------------------------------------------------------------


def test_safe_logger_reports_once_and_disables(caplog):
    inner = FailingLogger()
    sink = SafeLogger(inner, name="failing")
    with caplog.at_level(logging.ERROR, logger="bem.loggers.safe"):
        for step in range(10):
            sink.set_values({"loss": float(step), "lr": 0.1}, step=step)
        sink.stop()
    assert sink.failed
    assert len(inner.calls) == 1  # the first call failed, every later one was skipped
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "failing" in errors[0].getMessage()
    assert "No space left on device" in errors[0].getMessage()


def test_safe_logger_passes_calls_through():
    inner = RecordingLogger()
    sink = SafeLogger(inner)
    sink.initialize(CONFIG)
    sink.log("loss", 1.0, 1)
    sink.set_values({"a": 2}, step=2)
    assert inner.calls == [("loss", 1.0, 1), ("a", 2, 2)]
    assert not sink.failed


# --- TensorBoard --------------------------------------------------------------------------


def read_events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # Size guidance 0 keeps every event (the default keeps only 4 images per tag).
    accumulator = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def scalar_history(accumulator, tag):
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def test_tensorboard_scalars_images_config(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    png = write_png(tmp_path / "scatter.png", size=(12, 10))
    sink = make_logger("tensorboard", run_dir, CONFIG, safe=False)
    sink.initialize(CONFIG)
    for step in (1, 2, 3):
        sink.set_values({"loss": 1.0 / step, "grad_norm": torch.tensor(2.0 * step)}, step=step)
    sink.log("eval/model/mse", [0.25, 0.5], step=3)
    sink.log_figure("scatter/model", png, step=3)
    sink.log_image("samples/model", torch.zeros(4, 3, 8, 8), step=3)
    sink.stop()

    events = read_events(run_dir / "tb")
    loss = scalar_history(events, "loss")
    assert [step for step, _ in loss] == [1, 2, 3]
    # TensorBoard stores float32: relative error below 2**-24, inside approx's default 1e-6.
    assert [value for _, value in loss] == pytest.approx([1.0, 0.5, 1.0 / 3])
    assert scalar_history(events, "grad_norm") == [(1, 2.0), (2, 4.0), (3, 6.0)]
    assert scalar_history(events, "eval/model/mse/1") == [(3, 0.5)]
    figure = events.Images("scatter/model")
    assert [(image.step, image.width, image.height) for image in figure] == [(3, 12, 10)]
    grid = events.Images("samples/model")
    assert (grid[0].width, grid[0].height) == (4 * 10 + 2, 10 + 2)
    assert "config/text_summary" in events.Tags()["tensors"]
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")


def test_tensorboard_resume_continues_history(tmp_path):
    run_dir = tmp_path / "run"
    first = make_logger("tensorboard", run_dir, CONFIG, safe=False)
    first.initialize(CONFIG)
    for step in range(1, 6):
        first.log("loss", float(step), step)
    first.stop()

    # The checkpoint was at epoch 3, so epochs 4 and 5 run again and replace the logged ones.
    resumed = make_logger("tensorboard", run_dir, CONFIG, resume=True, purge_step=4, safe=False)
    resumed.initialize(CONFIG)
    for step in range(4, 7):
        resumed.log("loss", 10.0 * step, step)
    resumed.stop()

    history = scalar_history(read_events(run_dir / "tb"), "loss")
    assert history == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (6, 60.0)]


def test_tensorboard_fresh_run_replaces_events(tmp_path):
    run_dir = tmp_path / "run"
    for value in (1.0, 2.0):
        sink = make_logger("tensorboard", run_dir, CONFIG, safe=False)
        sink.initialize(CONFIG)
        sink.log("loss", value, 1)
        sink.stop()
    assert scalar_history(read_events(run_dir / "tb"), "loss") == [(1, 2.0)]


# --- MLflow -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory):
    """One SQLite tracking store for the module: creating its tables takes seconds."""
    folder = tmp_path_factory.mktemp("mlflow_sqlite")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    # An explicit artifact location keeps artifacts under tmp instead of ./mlruns.
    MlflowClient(uri).create_experiment("bem-tests", artifact_location=str(folder / "artifacts"))
    return uri


def artifact_paths(client, run_id, path=None):
    """Return every artifact file of the run, recursively."""
    found = []
    for item in client.list_artifacts(run_id, path):
        found += artifact_paths(client, run_id, item.path) if item.is_dir else [item.path]
    return sorted(found)


def log_session(sink, steps, scale, figure=None):
    sink.initialize(CONFIG)
    for step in steps:
        sink.set_values({"loss": scale * step, "name": "dlpm"}, step=step)
    if figure is not None:
        sink.log_figure("scatter/model", figure, step=steps[-1])
        sink.log_image("samples/model", torch.zeros(2, 1, 4, 4), step=steps[-1])
    sink.stop()


def check_mlflow_run(client, run_dir, figure_name):
    state = json.loads((run_dir / "mlflow_run.json").read_text())
    run = client.get_run(state["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == run_dir.name
    assert run.data.params["data.alpha"] == "1.7"
    assert run.data.params["data.dims"] == "(2, 3)"
    assert run.data.params["training.grad_clip"] == "None"
    assert run.data.tags["name"] == "dlpm"
    history = sorted((m.step, m.value) for m in client.get_metric_history(state["run_id"], "loss"))
    artifacts = artifact_paths(client, state["run_id"])
    assert "config.yml" in artifacts
    assert f"figures/scatter/model/step_2/{figure_name}" in artifacts
    assert "images/samples/model/step_2/grid.png" in artifacts
    return state["run_id"], history


def test_mlflow_file_store_log_and_resume(tmp_path, monkeypatch, network_attempts):
    uri = (tmp_path / "mlruns").as_uri()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yml").write_text("seed: 0\n")
    figure = write_png(tmp_path / "scatter_e2.png")

    log_session(mlflow_logger.MLflowLogger(run_dir, tracking_uri=uri), [1, 2], 1.0, figure)
    client = MlflowClient(uri)
    run_id, history = check_mlflow_run(client, run_dir, "scatter_e2.png")
    assert history == [(1, 1.0), (2, 2.0)]

    # The resumed session finds the store through MLFLOW_TRACKING_URI instead of the argument.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    log_session(make_logger("mlflow", run_dir, CONFIG, resume=True, safe=False), [3, 4], 10.0)
    same_id, history = check_mlflow_run(client, run_dir, "scatter_e2.png")
    assert same_id == run_id
    assert history == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
    assert network_attempts == []


def test_mlflow_sqlite_env_uri_and_fresh_run(sqlite_store, tmp_path, monkeypatch, network_attempts):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "bem-tests")
    run_dir = tmp_path / "run"
    figure = write_png(tmp_path / "scatter.png")

    sink = make_logger("mlflow", run_dir, CONFIG, safe=False)
    assert sink.tracking_uri == sqlite_store
    log_session(sink, [1, 2], 1.0, figure)
    client = MlflowClient(sqlite_store)
    first_id, history = check_mlflow_run(client, run_dir, "scatter.png")
    assert history == [(1, 1.0), (2, 2.0)]
    experiment = client.get_experiment_by_name("bem-tests")
    assert client.get_run(first_id).info.experiment_id == experiment.experiment_id

    log_session(make_logger("mlflow", run_dir, CONFIG, resume=True, safe=False), [3], 5.0)
    resumed_id, history = check_mlflow_run(client, run_dir, "scatter.png")
    assert resumed_id == first_id
    assert history == [(1, 1.0), (2, 2.0), (3, 15.0)]

    # A fresh run in the same folder starts a new MLflow run and leaves the old one as it was.
    log_session(make_logger("mlflow", run_dir, CONFIG, safe=False), [1], 7.0)
    new_id = json.loads((run_dir / "mlflow_run.json").read_text())["run_id"]
    assert new_id != first_id
    assert [m.value for m in client.get_metric_history(new_id, "loss")] == [7.0]
    assert len(client.get_metric_history(first_id, "loss")) == 3
    assert network_attempts == []


def test_mlflow_resume_with_unknown_run_starts_new(sqlite_store, tmp_path, caplog):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "mlflow_run.json").write_text(json.dumps({"run_id": "0" * 32}))
    sink = mlflow_logger.MLflowLogger(
        run_dir, tracking_uri=sqlite_store, experiment_name="bem-tests", resume=True
    )
    with caplog.at_level(logging.WARNING, logger="bem.loggers.mlflow"):
        log_session(sink, [1], 1.0)
    assert "starting a new run" in caplog.text
    assert json.loads((run_dir / "mlflow_run.json").read_text())["run_id"] != "0" * 32


def test_mlflow_telemetry_disabled():
    telemetry = pytest.importorskip("mlflow.telemetry", reason="this MLflow has no telemetry")
    assert telemetry.get_telemetry_client() is None


def test_safe_mlflow_survives_broken_store(tmp_path, monkeypatch, caplog):
    # A store folder below a plain file cannot be created: MLflow fails, the loop goes on.
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (blocker / "mlruns").as_uri())
    sink = make_logger("mlflow", tmp_path / "run", CONFIG)
    with caplog.at_level(logging.ERROR, logger="bem.loggers.safe"):
        sink.initialize(CONFIG)
        for step in range(5):
            sink.log("loss", float(step), step)
        sink.stop()
    assert sink.failed
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "logger mlflow failed in initialize" in errors[0].getMessage()


# --- Neptune ------------------------------------------------------------------------------


def test_neptune_missing_variable(monkeypatch, tmp_path):
    from dlpm.NeptuneLogger import NeptuneLogger

    monkeypatch.delenv("NEPTUNE_MODE", raising=False)
    monkeypatch.delenv("NEPTUNE_PROJECT", raising=False)
    monkeypatch.setenv("NEPTUNE_API_TOKEN", "not-a-real-token")
    with pytest.raises(ValueError, match="NEPTUNE_PROJECT is not set"):
        NeptuneLogger(tmp_path)
    monkeypatch.setenv("NEPTUNE_PROJECT", "workspace/project")
    monkeypatch.delenv("NEPTUNE_API_TOKEN")
    with pytest.raises(ValueError, match="NEPTUNE_API_TOKEN is not set"):
        make_logger("neptune", tmp_path)


def test_neptune_missing_package(monkeypatch, tmp_path):
    monkeypatch.setenv("NEPTUNE_PROJECT", "workspace/project")
    monkeypatch.setenv("NEPTUNE_API_TOKEN", "not-a-real-token")
    monkeypatch.setitem(sys.modules, "neptune", None)  # makes `import neptune` fail
    with pytest.raises(ImportError, match=r"pip install -e '\.\[neptune\]'"):
        make_logger("neptune", tmp_path)


def test_neptune_invalid_mode(tmp_path):
    from dlpm.NeptuneLogger import NeptuneLogger

    with pytest.raises(ValueError, match="'online' is invalid"):
        NeptuneLogger(tmp_path, mode="online")


def test_neptune_debug_mode(tmp_path, monkeypatch):
    pytest.importorskip("neptune", reason="neptune is not installed (pip install -e .[neptune])")
    # Debug mode keeps the run in memory and needs neither a project nor a token.
    monkeypatch.setenv("NEPTUNE_MODE", "debug")
    monkeypatch.delenv("NEPTUNE_PROJECT", raising=False)
    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    figure = write_png(tmp_path / "scatter.png")
    sink = make_logger("neptune", tmp_path / "run", CONFIG, safe=False)
    sink.initialize(CONFIG)
    for step in (1, 2):
        sink.set_values({"loss": float(step)}, step=step)
    sink.log_figure("scatter/model", figure, step=2)
    run = sink.run
    assert run["parameters/data/alpha"].fetch() == 1.7
    assert run["metrics/loss"].fetch_last() == 2.0
    sink.stop()
