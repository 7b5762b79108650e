"""The image path end to end: config, data, run.py and eval.py on digits at 8x8 with a tiny UNet."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import exit_status, write_config

from bem.config import ConfigError
from bem.data import LoaderBatches, make_batch_source
from bem.datasets import get_dataset
from bem.datasets.image_data import ImageMetrics, class_proportions
from bem.datasets.images import get_image_dataset
from bem.metrics.classifier import load_or_train_classifier
from bem.plots import reverse_process_strip, save_image_files
from dlpm.config_schema import build_schema

TINY_IMAGE = {
    "seed": 0,
    "data": {"dataset": "digits", "image_size": 8},
    "diffusion": {"alpha": 1.7, "reverse_steps": 20, "clamp_a": 20.0, "clamp_eps": 200.0},
    "sampling": {"reverse_steps": 5},
    "model": {
        "model_type": "ddpm",
        "unet": {
            "model_channels": 8,
            "channel_mult": [1, 2],
            "num_res_blocks": 1,
            "attn_resolutions": [],
            "num_heads": 1,
        },
    },
    "training": {"batch_size": 64, "ema_rates": [0.9], "n_max_batch": 2},
    "eval": {"nsamples": 8, "batch_size": 4},
    "run": {"epochs": 1, "progress": False, "device": "cpu"},
}


def tiny_config(data_dir: Path, **data) -> dict:
    return TINY_IMAGE | {"data": TINY_IMAGE["data"] | {"data_dir": str(data_dir)} | data}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train the tiny config for one epoch and evaluate it with ``--generate 8 --animate``.

    The metric classifier is trained first for 50 steps into the run's data root, so that the
    evaluation loads it from the cache instead of training the default 1000 steps.
    """
    folder = tmp_path_factory.mktemp("image_run")
    data_dir = folder / "data"
    digits = get_image_dataset("digits", image_size=8)
    load_or_train_classifier("digits", digits, data_dir, steps=50)
    config = write_config(folder, tiny_config(data_dir))
    with pytest.MonkeyPatch.context() as monkeypatch:
        run_status = exit_status("run.py", folder, monkeypatch, "--config", str(config))
        eval_status = exit_status(
            "eval.py", folder, monkeypatch, "--generate", "8", "--animate", "--no_progress"
        )
    return folder, run_status, eval_status


def test_run_writes_checkpoint(trained):
    folder, run_status, _ = trained
    assert run_status == 0
    assert (folder / "models" / "default" / "checkpoint_1.pt").is_file()


def test_eval_writes_pngs_and_grid(trained):
    folder, _, eval_status = trained
    run_dir = folder / "models" / "default"
    assert eval_status == 0
    for variant in ("model", "ema_0.9"):
        files = sorted((run_dir / f"samples_epoch1_{variant}").glob("*.png"))
        assert [f.name for f in files] == [f"{i:05d}.png" for i in range(8)]
        with Image.open(files[0]) as image:
            assert image.size == (8, 8)
            assert image.mode == "L"
        assert (run_dir / f"samples_epoch1_{variant}.png").is_file()
        assert (run_dir / f"reverse_epoch1_{variant}.png").is_file()


def test_eval_stores_image_metrics(trained):
    folder, _, _ = trained
    results = json.loads((folder / "models" / "default" / "eval_results.json").read_text())
    metrics = results["epochs"]["1"]["variants"]["model"]
    for key in ("classifier_fid", "classifier_precision", "class_tv", "generated_nonfinite"):
        assert key in metrics
    proportions = [metrics[f"class_proportion_{c}"] for c in range(10)]
    # 8 samples: every proportion is a multiple of 1/8 and they sum to 1.
    assert sum(proportions) == pytest.approx(1.0)
    assert all(abs(8 * p - round(8 * p)) < 1e-9 for p in proportions)
    assert 0.0 <= metrics["class_tv"] <= 1.0


def test_class_ratio_uses_training_proportions(trained):
    folder, _, _ = trained
    results = json.loads((folder / "models" / "default" / "eval_results.json").read_text())
    metrics = results["epochs"]["1"]["variants"]["model"]
    train = class_proportions(get_image_dataset("digits", image_size=8))
    for c in range(10):
        expected = metrics[f"class_proportion_{c}"] / float(train[c])
        assert metrics[f"class_ratio_{c}"] == pytest.approx(expected)


def test_missing_mnist_exits_2_and_writes_nothing(tmp_path, monkeypatch, capsys):
    p = tiny_config(tmp_path / "empty_root", dataset="mnist")
    config = write_config(tmp_path, p)
    status = exit_status("run.py", tmp_path, monkeypatch, "--config", str(config))
    error = capsys.readouterr().err
    assert status == 2
    assert "MNIST files not found" in error
    assert "train-images-idx3-ubyte.gz" in error
    assert len(error.strip().splitlines()[-1]) > 0
    assert not (tmp_path / "models").exists()
    assert not (tmp_path / "empty_root").exists()


def test_data_dir_flag_sets_root(tmp_path, monkeypatch, capsys):
    config = write_config(tmp_path, tiny_config(tmp_path, dataset="mnist"))
    args = ("--config", str(config), "--data_dir", str(tmp_path / "elsewhere"))
    assert exit_status("run.py", tmp_path, monkeypatch, *args) == 2
    assert str(tmp_path / "elsewhere" / "MNIST" / "raw") in capsys.readouterr().err


@pytest.mark.parametrize(
    ("unet", "message"),
    [
        ({"channel_mult": []}, "'channel_mult' = [] is invalid"),
        ({"channel_mult": [1, 0]}, "'model.unet.channel_mult[1]' = 0 is out of range"),
        ({"channel_mult": "1,2"}, "'model.unet.channel_mult' = '1,2' has the wrong type"),
        ({"learn_variance": True}, "'learn_variance' = true is not supported"),
    ],
)
def test_config_rejects_bad_unet(tmp_path, unet, message):
    p = tiny_config(tmp_path)
    p["model"] = {"model_type": "ddpm", "unet": TINY_IMAGE["model"]["unet"] | unet}
    with pytest.raises(ConfigError) as error:
        build_schema().parse(p)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"channels": 3}, "'channels' = 3 but 'digits' has 1 channel(s)"),
        ({"imbalance_factor": 10.0}, "applies to cifar10_lt only"),
        ({"std": 0.1}, "'std' = 0.1 applies to 2D data only"),
        ({"dataset": "sas"}, "'image_size' = 8 applies to image data sets only"),
    ],
)
def test_config_rejects_bad_data_keys(tmp_path, data, message):
    with pytest.raises(ConfigError, match="invalid section 'data'") as error:
        build_schema().parse(tiny_config(tmp_path, **data))
    assert message in str(error.value)


def test_ddpm_alias_selects_unet_section(tmp_path):
    config = build_schema().parse(tiny_config(tmp_path))
    assert config.p["model"]["model_type"] == "ddpm"
    assert config.model.model_type == "unet"
    assert config.model.unet.channel_mult == (1, 2)


def test_get_dataset_returns_image_splits(tmp_path):
    p = build_schema().parse(tiny_config(tmp_path)).p
    splits = get_dataset(p)
    assert splits.kind == "image"
    assert splits.item_shape == (1, 8, 8)
    assert isinstance(splits.metrics, ImageMetrics)
    source = make_batch_source(splits.train, 16, seed=0, device="cpu")
    assert isinstance(source, LoaderBatches)
    batch = next(iter(source.epoch()))
    assert batch.shape == (16, 1, 8, 8)
    assert float(batch.min()) >= -1.0
    assert float(batch.max()) <= 1.0


def test_image_metrics_of_real_images(tmp_path):
    # Scoring the reference images themselves: FID 0 up to float64 rounding of 128-d
    # covariances (about 1e-10 relative), whatever the classifier's weights are.
    digits = get_image_dataset("digits", image_size=8)
    load_or_train_classifier("digits", digits, tmp_path, steps=20)
    metrics = ImageMetrics("digits", digits, tmp_path, class_proportions(digits))
    real = torch.stack([digits[i][0] for i in range(300)])
    out = metrics(real, real)
    assert out["classifier_fid"] == pytest.approx(0.0, abs=1e-6)
    assert out["classifier_precision"] == 1.0
    assert out["classifier_coverage"] == 1.0


def test_save_image_files_round_trip(tmp_path):
    images = torch.linspace(-1.0, 1.0, 2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    paths = save_image_files(images, tmp_path / "pngs", batch_size=1)
    assert [Path(p).name for p in paths] == ["00000.png", "00001.png"]
    with Image.open(paths[1]) as image:
        stored = np.asarray(image)
    expected = ((images[1] + 1.0) / 2.0 * 255.0).round().to(torch.uint8).permute(1, 2, 0)
    assert np.array_equal(stored, expected.numpy())


def test_reverse_strip_size(tmp_path):
    history = torch.zeros(21, 3, 1, 8, 8)
    path = tmp_path / "strip.png"
    reverse_process_strip(history, path, n_samples=2, n_columns=5, padding=2)
    with Image.open(path) as image:
        # 5 columns and 2 rows of 8-pixel images with 2-pixel padding around each.
        assert image.size == (5 * 10 + 2, 2 * 10 + 2)
