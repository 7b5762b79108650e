"""Figures for 2D experiments and image samples, written to PNG or GIF files.

Uses matplotlib's non-interactive Agg canvas (``matplotlib.figure.Figure``, not pyplot), so it
never opens a window and never changes the global backend. Every function closes its figure.
Heavy-tailed samples put a few points at norms thousands of times the bulk's, so the scatter
plot shows three views: all points, the box between the real data's 1% and 99% quantiles per
coordinate, and the signed logarithm ``sign(x) * log1p(|x|)``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

logger = logging.getLogger(__name__)

__all__ = [
    "signed_log",
    "scatter_real_vs_generated",
    "survival_plot",
    "loss_curve",
    "animate_reverse_process",
    "image_grid",
    "reverse_process_strip",
    "save_image_files",
]

REAL_COLOR = "tab:blue"
GENERATED_COLOR = "tab:orange"

# Scale of the signed-log view: this quantile of the absolute real coordinates. Points within it
# stay nearly linear, because a smaller scale opens a visible gap along both axes.
SIGNED_LOG_QUANTILE = 0.9


def _to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _points(x: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    x = _to_numpy(x)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"{name} must have shape (n, 2), got {x.shape}")
    return x


def _finite_rows(x: np.ndarray) -> np.ndarray:
    return x[np.isfinite(x).all(axis=1)]


def _new_figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _marker_style(n: int) -> dict:
    """Return a point size and opacity that keep ``n`` overlapping points readable."""
    if n <= 2_000:
        return {"s": 6.0, "alpha": 0.6}
    if n <= 20_000:
        return {"s": 2.0, "alpha": 0.35}
    return {"s": 1.0, "alpha": 0.2}


def _save(fig: Figure, path: str | os.PathLike) -> None:
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=150)
    logger.debug("wrote %s", path)


def signed_log(x: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Return ``sign(x) * log1p(|x| / scale)``: linear near 0, logarithmic in the tails."""
    return np.sign(x) * np.log1p(np.abs(x) / scale)


def _limits(*clouds: np.ndarray) -> list[tuple[float, float]]:
    """Return per-coordinate axis limits covering every point, with a 5% margin."""
    stacked = np.concatenate(clouds)
    low, high = stacked.min(axis=0), stacked.max(axis=0)
    margin = 0.05 * (high - low) + 1e-12
    return [(lo, hi) for lo, hi in zip(low - margin, high + margin, strict=True)]


def _scatter(ax: Axes, points: np.ndarray, color: str, limits: list[tuple[float, float]]) -> None:
    ax.scatter(
        points[:, 0],
        points[:, 1],
        color=color,
        linewidths=0,
        rasterized=True,
        **_marker_style(points.shape[0]),
    )
    ax.set_xlim(*limits[0])
    ax.set_ylim(*limits[1])
    ax.grid(alpha=0.3)


def scatter_real_vs_generated(
    real: torch.Tensor | np.ndarray,
    generated: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    title: str | None = None,
) -> None:
    """Save a scatter plot of real (top row) and generated (bottom row) 2D points, three views.

    Columns, with the same axes in both rows: all finite points; the box between the 1% and 99%
    quantiles of the real data per coordinate, widened by 10% on each side (the title gives the
    fraction of each set outside it); and the signed-log view ``sign(x) * log1p(|x| / s)`` of
    all finite points, with ``s`` the ``SIGNED_LOG_QUANTILE`` quantile of the absolute real
    coordinates: the bulk stays nearly linear within about one unit, and a point 1000 times
    farther sits at about 7.

    Args:
        real, generated: arrays of shape ``(n, 2)`` and ``(m, 2)``; non-finite rows are skipped
            and counted in the row label.
        path: output PNG file; its folder is created if missing.
        title: figure title.
    """
    real, generated = _points(real, "real"), _points(generated, "generated")
    n_nonfinite = generated.shape[0] - _finite_rows(generated).shape[0]
    real, generated = _finite_rows(real), _finite_rows(generated)
    if real.shape[0] == 0 or generated.shape[0] == 0:
        raise ValueError("scatter_real_vs_generated needs finite points in both sets")

    low, high = np.quantile(real, 0.01, axis=0), np.quantile(real, 0.99, axis=0)
    margin = 0.1 * (high - low) + 1e-12
    box = [(lo, hi) for lo, hi in zip(low - margin, high + margin, strict=True)]
    scale = max(float(np.quantile(np.abs(real), SIGNED_LOG_QUANTILE)), 1e-12)
    log_real, log_generated = signed_log(real, scale), signed_log(generated, scale)

    fig = _new_figure((14, 9))
    axes = fig.subplots(2, 3)
    generated_label = f"generated (n={generated.shape[0]})"
    if n_nonfinite:
        generated_label += f"\n{n_nonfinite} non-finite not shown"
    rows = (
        (real, log_real, REAL_COLOR, f"real (n={real.shape[0]})"),
        (generated, log_generated, GENERATED_COLOR, generated_label),
    )
    for row, (points, log_points, color, label) in enumerate(rows):
        outside = np.mean(np.any((points < low - margin) | (points > high + margin), axis=1))
        _scatter(axes[row, 0], points, color, _limits(real, generated))
        _scatter(axes[row, 1], points, color, box)
        _scatter(axes[row, 2], log_points, color, _limits(log_real, log_generated))
        axes[row, 0].set_title("all points")
        axes[row, 1].set_title(f"real 1%-99% box, {100 * outside:.1f}% outside")
        axes[row, 2].set_title(f"signed log, scale s = {scale:.3g}")
        axes[row, 0].set_ylabel(f"{label}\n$x_2$")
        axes[row, 1].set_ylabel("$x_2$")
        axes[row, 2].set_ylabel(r"sign$(x_2)\,\log(1 + |x_2|/s)$")
    for col in range(2):
        axes[1, col].set_xlabel("$x_1$")
    axes[1, 2].set_xlabel(r"sign$(x_1)\,\log(1 + |x_1|/s)$")
    if title:
        fig.suptitle(title)
    _save(fig, path)


def survival_plot(
    real: torch.Tensor | np.ndarray,
    generated: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    title: str | None = None,
) -> None:
    """Save the empirical survival function ``P(|X| > r)`` of the Euclidean norm, log-log axes.

    A distribution with tail index ``alpha`` has a straight tail of slope ``-alpha``. The curve
    of ``n`` points ends at ``1/n``, so smaller probabilities cannot be read from it.

    Args:
        real, generated: arrays of shape ``(n, d)``; non-finite rows are skipped.
        path: output PNG file.
        title: figure title.
    """
    fig = _new_figure((6, 4.5))
    ax = fig.subplots()
    for x, color, label in ((real, REAL_COLOR, "real"), (generated, GENERATED_COLOR, "gen")):
        x = _to_numpy(x)
        x = _finite_rows(x.reshape(x.shape[0], -1))
        norms = np.sort(np.linalg.norm(x, axis=1))
        # P(|X| > norms[i]) estimated as (n - i) / n, so the largest point sits at 1/n.
        survival = (norms.shape[0] - np.arange(norms.shape[0])) / norms.shape[0]
        positive = norms > 0
        ax.step(norms[positive], survival[positive], where="post", color=color, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("norm $r$")
    ax.set_ylabel(r"$P(\|X\| > r)$")
    ax.grid(which="both", alpha=0.3)
    ax.legend()
    ax.set_title(title or "survival function of the norm")
    _save(fig, path)


def loss_curve(
    values: Sequence[float] | np.ndarray | torch.Tensor,
    path: str | os.PathLike,
    *,
    xlabel: str = "step",
    ylabel: str = "loss",
    title: str | None = None,
    log_scale: bool | None = None,
) -> None:
    """Save a training curve, with a moving average when there are more than 50 values.

    Args:
        values: one loss value per step or epoch, shape ``(n,)``.
        path: output PNG file.
        xlabel, ylabel, title: axis labels and figure title.
        log_scale: logarithmic y axis; by default when all values are positive and span more
            than a factor 100.
    """
    values = _to_numpy(values).reshape(-1)
    if values.size == 0:
        raise ValueError("loss_curve needs at least one value, got an empty sequence")
    finite = values[np.isfinite(values)]
    if log_scale is None:
        log_scale = finite.size > 0 and finite.min() > 0 and finite.max() > 100 * finite.min()

    fig = _new_figure((7, 4))
    ax = fig.subplots()
    steps = np.arange(1, values.size + 1)  # epochs and optimizer steps count from 1
    ax.plot(steps, values, color="tab:blue", alpha=0.4 if values.size > 50 else 1.0, label=ylabel)
    if values.size > 50:
        window = max(values.size // 50, 2)
        smoothed = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smoothed, color="tab:red", label=f"mean of {window}")
        ax.legend()
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    # Steps and epochs are whole numbers.
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    _save(fig, path)


def animate_reverse_process(
    history: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    *,
    real: torch.Tensor | np.ndarray | None = None,
    max_frames: int = 60,
    fps: int = 10,
    limits: tuple[float, float] | None = None,
    max_points: int = 5000,
) -> None:
    """Save a GIF of the reverse process of 2D samples.

    Args:
        history: states ``x_T, ..., x_0`` of shape ``(steps + 1, n, 2)``.
        path: output GIF file.
        real: optional real points of shape ``(m, 2)`` drawn as a fixed background.
        max_frames: at most this many evenly spaced frames; the first and last states are kept.
        fps: frames per second.
        limits: common axis range for both coordinates; by default the 0.5% and 99.5% quantiles
            of the final state (or of ``real``), widened by 20%, so that the early frames of a
            heavy-tailed prior do not shrink the data to a dot.
        max_points: at most this many of the ``n`` trajectories are drawn (the first ones).
    """
    history = _to_numpy(history)
    if history.ndim != 3 or history.shape[2] != 2:
        raise ValueError(f"history must have shape (steps + 1, n, 2), got {history.shape}")
    if max_frames < 2:
        raise ValueError(f"max_frames must be at least 2, got {max_frames}")
    history = history[:, :max_points]
    frames = np.unique(np.linspace(0, history.shape[0] - 1, max_frames).round().astype(int))

    reference = _points(real, "real") if real is not None else _finite_rows(history[-1])
    if limits is None:
        low, high = np.quantile(reference, [0.005, 0.995])
        margin = 0.2 * (high - low) + 1e-12
        limits = (low - margin, high + margin)

    fig = _new_figure((5, 5))
    ax = fig.subplots()
    if real is not None:
        ax.scatter(*reference.T, color=REAL_COLOR, label="real", linewidths=0, s=2, alpha=0.15)
    style = _marker_style(history.shape[1])
    points = ax.scatter(
        *history[0].T, color=GENERATED_COLOR, label="samples", linewidths=0, **style
    )
    ax.set_xlim(*limits)
    ax.set_ylim(*limits)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.grid(alpha=0.3)
    legend = ax.legend(loc="upper right", markerscale=4)
    for handle in legend.legend_handles:
        handle.set_alpha(1.0)
    last = history.shape[0] - 1

    def draw(frame: int):
        points.set_offsets(history[frame])
        ax.set_title(f"reverse process: step {last - frame} of {last}")
        return (points,)

    animation = FuncAnimation(fig, draw, frames=frames, blit=False)
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    animation.save(path, writer=PillowWriter(fps=fps), dpi=100)
    logger.debug("wrote %s (%d frames)", path, len(frames))


def image_grid(
    images: torch.Tensor, path: str | os.PathLike, nrow: int = 8, *, padding: int = 2
) -> None:
    """Save a batch of images in [-1, 1] as one PNG grid.

    Args:
        images: tensor of shape ``(B, C, H, W)`` with ``C`` 1 or 3, values in [-1, 1]; values
            outside are clipped.
        path: output PNG file.
        nrow: images per row.
        padding: pixels between images.

    Images smaller than 64 pixels are enlarged by an integer factor (nearest neighbour), so that
    16 x 16 samples stay readable in the PNG.
    """
    # Imported here because torchvision takes about a second to import and only this needs it.
    from torchvision.utils import save_image

    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = getattr(images, "shape", type(images).__name__)
        raise ValueError(f"images must be a tensor of shape (B, C, H, W), got {shape}")
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    grid = (images.detach().float().cpu().clamp(-1.0, 1.0) + 1.0) / 2.0
    factor = max(1, 64 // max(grid.shape[-2:]))
    if factor > 1:
        grid = torch.nn.functional.interpolate(grid, scale_factor=factor, mode="nearest")
    save_image(grid, path, nrow=nrow, padding=padding)
    logger.debug("wrote %s", path)


def _to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """Map images from [-1, 1] to [0, 1] on the CPU. NaN becomes black, infinities saturate."""
    images = torch.nan_to_num(images.detach().float().cpu(), nan=-1.0, posinf=1.0, neginf=-1.0)
    return (images.clamp(-1.0, 1.0) + 1.0) / 2.0


def save_image_files(
    images: torch.Tensor,
    folder: str | os.PathLike,
    *,
    batch_size: int = 256,
    progress: bool = False,
) -> list[str]:
    """Save each image in [-1, 1] as its own PNG file, ``00000.png``, ``00001.png``, ...

    Args:
        images: tensor (N, C, H, W) with C 1 or 3; values outside [-1, 1] are clipped.
        folder: output folder, created if needed.
        batch_size: images converted to 8 bits at a time.
        progress: show a tqdm bar over the batches.

    Returns:
        the paths written, in order.
    """
    from PIL import Image
    from tqdm.auto import tqdm

    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = getattr(images, "shape", type(images).__name__)
        raise ValueError(f"images must be a tensor of shape (N, 1 or 3, H, W), got {shape}")
    os.makedirs(folder, exist_ok=True)
    paths = []
    starts = range(0, images.shape[0], batch_size)
    for start in tqdm(starts, desc="writing PNG files", disable=not progress, leave=False):
        batch = (_to_unit_range(images[start : start + batch_size]) * 255.0).round()
        pixels = batch.to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for offset, array in enumerate(pixels):
            path = os.path.join(os.fspath(folder), f"{start + offset:05d}.png")
            image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
            image.save(path)
            paths.append(path)
    return paths


def reverse_process_strip(
    history: torch.Tensor,
    path: str | os.PathLike,
    *,
    n_samples: int = 8,
    n_columns: int = 10,
    padding: int = 2,
) -> None:
    """Save the reverse process of a few images as one PNG: a row per sample, a column per step.

    Args:
        history: states of the reverse process, (steps + 1, N, C, H, W), from the prior draw
            (index 0) to the samples (last index).
        path: output PNG file.
        n_samples: rows, the first samples of ``history``.
        n_columns: states shown per row, evenly spaced from the first to the last, both kept.
        padding: pixels between images.
    """
    from torchvision.utils import save_image

    if not isinstance(history, torch.Tensor) or history.ndim != 5:
        shape = getattr(history, "shape", type(history).__name__)
        raise ValueError(f"history must be a tensor (steps + 1, N, C, H, W), got {shape}")
    states = history.shape[0]
    columns = torch.linspace(0, states - 1, min(n_columns, states)).round().long()
    rows = history[columns, :n_samples].transpose(0, 1)  # (rows, columns, C, H, W)
    images = _to_unit_range(rows.reshape(-1, *history.shape[2:]))
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    save_image(images, path, nrow=len(columns), padding=padding)
    logger.debug("wrote %s", path)
