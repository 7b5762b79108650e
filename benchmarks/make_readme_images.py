"""Make the README pictures of the digits demo from two evaluated runs.

Reads the samples and ``eval_results.json`` that ``eval.py`` wrote for a DLPM run and a Gaussian
(DDPM) run of the digits config, and writes into ``img/``:

- ``digits_dlpm_1.7.png`` and ``digits_ddpm.png``: 8x8 grids of generated digits, enlarged,
  titled with the classifier-space FID and the class total variation;
- ``digits_class_proportions.png``: the class proportions of both runs' samples against those
  of the training set.

Train and evaluate the runs first::

    python run.py --config digits --name digits_dlpm_1.7 --threads 1
    python run.py --config digits --name digits_ddpm --method ddpm --threads 1
    python eval.py --name digits_dlpm_1.7 --generate 500
    python eval.py --name digits_ddpm --generate 500
    python benchmarks/make_readme_images.py
"""

import argparse
import json
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from bem.datasets.image_data import class_proportions
from bem.datasets.images import get_image_dataset

ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = 10


def latest_results(run_dir: Path, variant: str, epoch: int | None) -> tuple[int, dict]:
    """Return the evaluated epoch (the latest unless given) and the metrics of ``variant``."""
    results = json.loads((run_dir / "eval_results.json").read_text())["epochs"]
    chosen = str(epoch) if epoch is not None else max(results, key=int)
    variants = results[chosen]["variants"]
    if variant not in variants:
        raise SystemExit(f"{run_dir}: no variant {variant!r} at epoch {chosen}: {list(variants)}")
    nsamples = results[chosen]["settings"]["nsamples"]
    return int(chosen), {**variants[variant], "nsamples": nsamples}


def sample_grid(folder: Path, rows: int = 8) -> np.ndarray:
    """Tile the first ``rows * rows`` sample PNGs of ``folder`` with a 1-pixel white border."""
    files = sorted(folder.glob("*.png"))[: rows * rows]
    if len(files) < rows * rows:
        raise SystemExit(f"{folder} contains {len(files)} PNG files; expected {rows * rows}")
    tiles = [np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0 for path in files]
    height, width = tiles[0].shape
    grid = np.ones((rows * (height + 1) + 1, rows * (width + 1) + 1))
    for index, tile in enumerate(tiles):
        top, left = 1 + (index // rows) * (height + 1), 1 + (index % rows) * (width + 1)
        grid[top : top + height, left : left + width] = tile
    return grid


def save_grid(grid: np.ndarray, title: str, path: Path) -> None:
    figure = Figure(figsize=(5.0, 5.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    axes.set_axis_off()
    axes.set_title(title, fontsize=11)
    figure.savefig(path, dpi=150)
    print(f"wrote {path}")


def runs_size(runs: dict[str, dict]) -> int:
    """Return the number of samples behind the proportions (the smallest over the runs)."""
    return min(int(metrics["nsamples"]) for metrics in runs.values())


def save_proportions(runs: dict[str, dict], train: np.ndarray, path: Path) -> None:
    figure = Figure(figsize=(7.0, 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    classes = np.arange(NUM_CLASSES)
    width = 0.8 / (len(runs) + 1)
    axes.bar(classes - width * len(runs) / 2, train, width, label="training set", color="0.6")
    for offset, (label, metrics) in enumerate(runs.items(), start=1):
        values = [metrics[f"class_proportion_{c}"] for c in classes]
        tv = metrics["class_tv"]
        position = classes - width * len(runs) / 2 + offset * width
        axes.bar(position, values, width, label=f"{label} (TV {tv:.3f})")
    # Sampling noise alone: a proportion near 0.1 from n samples has standard deviation
    # sqrt(0.1 * 0.9 / n), so a TV of about 4 times that is expected even for a perfect model.
    n = runs_size(runs)
    axes.set_title(
        f"{n} samples per model; sampling noise of one proportion near 0.1:"
        f" {np.sqrt(0.09 / n):.3f}",
        fontsize=9,
    )
    axes.set_xticks(classes)
    axes.set_xlabel("digit (predicted by the metric classifier)")
    axes.set_ylabel("proportion of samples")
    axes.legend(fontsize=8, loc="upper right")
    figure.savefig(path, dpi=150)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dlpm", default="digits_dlpm_1.7", help="run name of the DLPM model")
    parser.add_argument("--ddpm", default="digits_ddpm", help="run name of the Gaussian model")
    parser.add_argument("--variant", default="ema_0.999", help="evaluated model variant")
    parser.add_argument("--epoch", type=int, default=None, help="evaluated epoch (default latest)")
    parser.add_argument("--out", type=Path, default=ROOT / "img", help="output folder")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    runs = {}
    for label, name, filename in (
        ("DLPM, alpha 1.7", args.dlpm, "digits_dlpm_1.7.png"),
        ("Gaussian (DDPM)", args.ddpm, "digits_ddpm.png"),
    ):
        run_dir = ROOT / "models" / name
        epoch, metrics = latest_results(run_dir, args.variant, args.epoch)
        runs[label] = metrics
        title = (
            f"{label}, epoch {epoch}\nclassifier FID {metrics['classifier_fid']:.2f},"
            f" class TV {metrics['class_tv']:.3f}"
        )
        grid = sample_grid(run_dir / f"samples_epoch{epoch}_{args.variant}")
        save_grid(grid, title, args.out / filename)
        print(f"{label}: {json.dumps({k: metrics[k] for k in ('classifier_fid', 'class_tv')})}")

    train = class_proportions(get_image_dataset("digits")).numpy()
    save_proportions(runs, train, args.out / "digits_class_proportions.png")


if __name__ == "__main__":
    main()
