"""Tests that the plotting functions of bem.plots write valid, non-empty image files."""

import numpy as np
import pytest
import torch
from PIL import Image

from bem import plots


def heavy_tailed(n: int, seed: int) -> np.ndarray:
    # Student t with 1.5 degrees of freedom: a bulk near 0 and a few points far out.
    return np.random.default_rng(seed).standard_t(1.5, size=(n, 2)) * 0.05


def assert_image(path, fmt: str) -> Image.Image:
    assert path.stat().st_size > 0
    image = Image.open(path)
    assert image.format == fmt
    return image


def test_scatter_writes_png(tmp_path):
    real, generated = heavy_tailed(3000, 0), torch.from_numpy(heavy_tailed(3000, 1))
    generated[0, 0] = float("nan")
    path = tmp_path / "sub" / "scatter.png"
    plots.scatter_real_vs_generated(real, generated, path, title="heavy tails")
    image = assert_image(path, "PNG")
    assert image.size[0] > image.size[1]


def test_scatter_rejects_bad_shape(tmp_path):
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        plots.scatter_real_vs_generated(np.zeros((5, 3)), np.zeros((5, 2)), tmp_path / "x.png")


def test_survival_plot_writes_png(tmp_path):
    path = tmp_path / "survival.png"
    plots.survival_plot(heavy_tailed(2000, 2), heavy_tailed(2000, 3), path)
    assert_image(path, "PNG")


def test_loss_curve_writes_png(tmp_path):
    values = np.exp(-np.linspace(0, 6, 300)) + 0.01
    path = tmp_path / "loss.png"
    plots.loss_curve(values, path)
    assert_image(path, "PNG")


def test_loss_curve_rejects_empty(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        plots.loss_curve([], tmp_path / "loss.png")


def test_animation_writes_gif_with_subsampled_frames(tmp_path):
    steps, n = 150, 200
    rng = np.random.default_rng(4)
    data = rng.standard_normal((n, 2)) * 0.1
    noise = rng.standard_normal((n, 2))
    weights = np.linspace(1.0, 0.0, steps + 1)[:, None, None]
    history = torch.from_numpy(weights * noise + (1 - weights) * data)
    path = tmp_path / "reverse.gif"
    plots.animate_reverse_process(history, path, real=data, max_frames=20, fps=5)
    image = assert_image(path, "GIF")
    assert 2 <= image.n_frames <= 20


def test_animation_rejects_bad_history(tmp_path):
    with pytest.raises(ValueError, match="steps"):
        plots.animate_reverse_process(np.zeros((3, 10)), tmp_path / "a.gif")


def test_image_grid_writes_png(tmp_path):
    images = torch.linspace(-1.5, 1.5, 6 * 3 * 8 * 8).reshape(6, 3, 8, 8)
    path = tmp_path / "grid.png"
    plots.image_grid(images, path, nrow=3)
    image = assert_image(path, "PNG")
    # 8-pixel images are enlarged 8 times to 64 pixels; 3 columns and 2 rows, 2 pixels of
    # padding around each.
    assert image.size == (3 * 66 + 2, 2 * 66 + 2)


def test_image_grid_keeps_large_images(tmp_path):
    images = torch.zeros(2, 1, 64, 64)
    path = tmp_path / "grid.png"
    plots.image_grid(images, path, nrow=2)
    assert assert_image(path, "PNG").size == (2 * 66 + 2, 66 + 2)


def test_signed_log_values():
    x = np.array([-np.e + 1, 0.0, np.e - 1])
    assert np.allclose(plots.signed_log(x), [-1.0, 0.0, 1.0])
