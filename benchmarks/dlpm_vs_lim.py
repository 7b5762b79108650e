"""Compare DLPM and LIM on 2D heavy-tailed data across the number of reverse steps.

The DLPM paper (Shariatian, Simsekli and Durmus, "Denoising Levy Probabilistic Models", ICLR 2025)
reports that DLPM needs far fewer reverse steps than LIM (Yoon, Park, Kim and Lim, NeurIPS 2023).
This script measures that claim on the heavy-tail data of ``dlpm/configs/2d_data.yml``
(isotropic alpha-stable points, tail index 1.7, scale 0.05). For each seed of ``--seeds`` it
trains one DLPM and one LIM model with the same network, data, seed and budget through
:class:`bem.Experiments.Experiment` (or loads them with ``--load``), then samples the raw
(non-EMA) model with every step count of ``--steps`` using:

- the stochastic samplers: DLPM, and the reverse LIM SDE with score weight 2 (``lim.score_weight``
  default, which keeps the forward marginals);
- the deterministic samplers: DLIM, and the LIM probability-flow ODE;
- the LIM SDE with score weight alpha, the public LIM sampler, at the step counts of
  ``--alpha-weight-steps``;
- the LIM SDE with score weight 2 and no clip of the stable draws (``lim.clamp_eps`` is 20 in
  training and elsewhere in sampling), at the step counts of ``--unclipped-steps``, to show
  the effect of the clip on the tails.

Three metrics score each sample against the held-out real points. Wasserstein-1 uses
``ot.emd2`` on 2000 points per set. The MSLE compares the upper quantiles of the norm (levels
0.95 to 1). The tail mass is the fraction of points beyond the 0.99 quantile of the real norms,
0.01 for a perfect sampler. All samplers
at one step count share the sampling seed. The script writes the figure ``--image``: one panel
per metric, a log-scaled step axis, means over seeds with min-max bars. It stores every number
as JSON in the work folder. With ``--out`` it writes the settings and the table of means as a
section of that page between marker comments, so a rerun replaces only that section.

    python benchmarks/dlpm_vs_lim.py [--epochs 50] [--nsamples 10000] [--seeds 0 1 2]
        [--steps 10 25 50 100 500] [--alpha-weight-steps 25 100] [--unclipped-steps 100 500]
        [--load]
        [--workdir models/dlpm_vs_lim] [--image img/dlpm_vs_lim_steps.png]
        [--out docs/results.md] [--threads 1]
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import platform
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bem.config import load_yaml  # noqa: E402
from bem.Experiments import Experiment  # noqa: E402
from bem.metrics.two_d import msle_quantiles, tail_masses, wasserstein_1  # noqa: E402
from dlpm.dlpm_experiment import dlpm_init  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "dlpm" / "configs" / "2d_data.yml"
START_MARKER = "<!-- dlpm_vs_lim:start -->"
END_MARKER = "<!-- dlpm_vs_lim:end -->"
TAIL_LEVEL = 0.99

# Sampler name to (method, deterministic). The configured LIM score weight is k = 2.
SAMPLERS: dict[str, tuple[str, bool]] = {
    "DLPM (stochastic)": ("dlpm", False),
    "DLIM (deterministic)": ("dlpm", True),
    "LIM SDE, k = 2": ("lim", False),
    "LIM ODE": ("lim", True),
}
ALPHA_WEIGHT_SAMPLER = "LIM SDE, k = alpha"
UNCLIPPED_SAMPLER = "LIM SDE, k = 2, no clip"

STYLES = {
    "DLPM (stochastic)": {"color": "tab:blue", "marker": "o", "linestyle": "-"},
    "DLIM (deterministic)": {"color": "tab:blue", "marker": "s", "linestyle": "--"},
    "LIM SDE, k = 2": {"color": "tab:red", "marker": "o", "linestyle": "-"},
    "LIM ODE": {"color": "tab:red", "marker": "s", "linestyle": "--"},
    ALPHA_WEIGHT_SAMPLER: {"color": "tab:orange", "marker": "^", "linestyle": ":"},
    UNCLIPPED_SAMPLER: {"color": "tab:purple", "marker": "v", "linestyle": ":"},
}


def run_config(method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Return the 2d_data config for ``method`` with this benchmark's budget."""
    p = load_yaml(CONFIG)
    p["method"] = method
    p["seed"] = seed
    p["run"].update(
        epochs=args.epochs,
        eval_freq=None,
        checkpoint_freq=None,
        progress=False,
        device="cpu",
        threads=args.threads,
    )
    return p


def train_or_load(method: str, seed: int, args: argparse.Namespace) -> tuple[Experiment, float]:
    """Train the model of ``method`` (or load its last checkpoint) and return it with the
    training wall time in seconds (0 when loaded)."""
    folder = args.workdir / f"seed{seed}" / method
    # A fresh training run replaces the run folder of an earlier call of this script.
    experiment = Experiment(
        folder, run_config(method, seed, args), init=dlpm_init(), overwrite=not args.load
    )
    experiment.prepare()
    if args.load:
        experiment.load()
        return experiment, 0.0
    start = time.perf_counter()
    experiment.run()
    seconds = time.perf_counter() - start
    experiment.terminate()
    return experiment, seconds


def score(real: np.ndarray, generated: torch.Tensor, seed: int) -> dict[str, float]:
    """Return W1, the MSLE of the norm and the tail mass beyond the real 0.99 norm quantile.

    Non-finite rows count as beyond the tail threshold and are dropped from W1 and the MSLE;
    their fraction is returned as ``nonfinite``.
    """
    points = generated.double().numpy()
    finite = np.isfinite(points).all(axis=1)
    tails = tail_masses(real, points, (TAIL_LEVEL,))
    return {
        "wasserstein": wasserstein_1(real, points[finite], seed=seed),
        "msle_norm": msle_quantiles(real, points[finite])["msle_norm"],
        "tail_mass": tails[f"tail_mass_gen_q{TAIL_LEVEL:g}"],
        "nonfinite": float(1.0 - finite.mean()),
    }


def sample(
    experiment: Experiment,
    steps: int,
    deterministic: bool,
    score_weight: float | None,
    clamp_eps: float | None,
    nsamples: int,
    seed: int,
) -> tuple[torch.Tensor, float]:
    """Draw ``nsamples`` points with the raw model; return them and the wall time in seconds.

    ``score_weight`` and ``clamp_eps`` override the configured LIM options when not None;
    ``clamp_eps = math.inf`` turns the clip off.
    """
    process = experiment.method.process
    configured_weight = process.lim_score_weight
    if score_weight is not None:
        process.lim_score_weight = score_weight
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    try:
        points = process.sample(
            experiment.models,
            (nsamples, 2),
            reverse_steps=steps,
            deterministic=deterministic,
            clamp_eps=clamp_eps,
            generator=generator,
        )
    finally:
        process.lim_score_weight = configured_weight
    return points, time.perf_counter() - start


def measure(
    experiments: dict[str, Experiment], seed: int, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Sample and score every sampler at every step count; return the rows and the real floor.

    The floor scores ``nsamples`` training points, an independent draw of the data, in place of
    generated ones.
    """
    real = experiments["dlpm"].data.test.double().numpy()
    train = experiments["dlpm"].data.train.double()[: args.nsamples]
    floor = score(real, train, seed)

    alpha = experiments["lim"].method.process.alpha
    # (name, method, deterministic, score weight, clamp_eps, steps); None keeps the config.
    cases = [
        (name, method, deterministic, None, None, steps)
        for name, (method, deterministic) in SAMPLERS.items()
        for steps in args.steps
    ]
    cases += [(ALPHA_WEIGHT_SAMPLER, "lim", False, alpha, None, s) for s in args.alpha_weight_steps]
    cases += [(UNCLIPPED_SAMPLER, "lim", False, None, math.inf, s) for s in args.unclipped_steps]

    rows = []
    for name, method, deterministic, weight, clamp_eps, steps in cases:
        # One sampling seed per step count, shared by all samplers (common random numbers).
        sampling_seed = 1000 * seed + steps
        points, seconds = sample(
            experiments[method],
            steps,
            deterministic,
            weight,
            clamp_eps,
            args.nsamples,
            sampling_seed,
        )
        row = {"sampler": name, "steps": steps, "seed": seed, "seconds": seconds}
        row.update(score(real, points, seed))
        rows.append(row)
        print(
            f"seed {seed} {name:20s} {steps:4d} steps  W1 {row['wasserstein']:.4f}  "
            f"MSLE {row['msle_norm']:.4f}  tail {row['tail_mass']:.4f}  ({seconds:.1f} s)"
        )
    return rows, floor


METRICS = ("wasserstein", "msle_norm", "tail_mass", "nonfinite", "seconds")


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Average the rows of each (sampler, steps) over seeds; add ``<metric>_min`` and ``_max``."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["sampler"], row["steps"]), []).append(row)
    summary = []
    for (sampler, steps), group in groups.items():
        entry: dict[str, Any] = {"sampler": sampler, "steps": steps, "seeds": len(group)}
        for key in METRICS:
            values = [r[key] for r in group]
            entry[key] = float(np.mean(values))
            entry[f"{key}_min"], entry[f"{key}_max"] = float(min(values)), float(max(values))
        summary.append(entry)
    return summary


def plot(rows: Sequence[dict[str, Any]], floor: dict[str, float], path: Path) -> None:
    """Plot W1, the MSLE of the norm and the tail mass against the number of reverse steps.

    ``rows`` are the output of :func:`summarize`: means with min-max bars over seeds.
    """
    panels = [
        ("wasserstein", "Wasserstein-1 (lower is better)"),
        ("msle_norm", "MSLE of the norm quantiles (lower is better)"),
        ("tail_mass", f"mass beyond the real {TAIL_LEVEL:g} norm quantile"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(15, 4.6), constrained_layout=True)
    names = list(dict.fromkeys(row["sampler"] for row in rows))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for name in names:
            points = sorted(
                (r["steps"], r[key], r[f"{key}_min"], r[f"{key}_max"])
                for r in rows
                if r["sampler"] == name
            )
            steps, values, low, high = (np.array(v) for v in zip(*points, strict=True))
            bars = np.stack([values - low, high - values])
            ax.errorbar(steps, values, yerr=bars, label=name, capsize=3, **STYLES[name])
        if key == "tail_mass":
            ax.axhline(1.0 - TAIL_LEVEL, color="black", linewidth=1, label="exact tail mass 0.01")
        else:
            ax.axhline(floor[key], color="gray", linewidth=1, label="real vs real")
        ax.set_xscale("log")
        # Tail masses reach 0, which a log scale cannot show.
        ax.set_yscale("linear" if key == "tail_mass" else "log")
        ax.set_xticks(sorted({r["steps"] for r in rows}))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("reverse steps")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    legend: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    fig.legend(
        legend.values(), legend.keys(), loc="outside lower center", ncol=len(legend), fontsize=9
    )
    fig.suptitle(
        "DLPM against LIM on 2D alpha-stable data (alpha 1.7), same network and budget;"
        " mean and min-max over seeds"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_table(rows: Sequence[dict[str, Any]], floor: dict[str, float]) -> list[str]:
    """Return the means of :func:`summarize` as Markdown table lines, with min-max ranges."""
    lines = [
        "| sampler | steps | W1 | MSLE norm | tail mass > q0.99 | sampling time (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]

    def cell(row: dict[str, Any], key: str) -> str:
        if row["seeds"] == 1:
            return f"{row[key]:.4f}"
        return f"{row[key]:.4f} ({row[key + '_min']:.4f}-{row[key + '_max']:.4f})"

    for row in rows:
        nonfinite = f", {row['nonfinite']:.2%} non-finite" if row["nonfinite"] else ""
        lines.append(
            f"| {row['sampler']} | {row['steps']} | {cell(row, 'wasserstein')}{nonfinite} |"
            f" {cell(row, 'msle_norm')} | {cell(row, 'tail_mass')} | {row['seconds']:.1f} |"
        )
    lines.append(
        f"| real vs real | - | {floor['wasserstein']:.4f} | {floor['msle_norm']:.4f} |"
        f" {floor['tail_mass']:.4f} | - |"
    )
    return lines


def write_section(path: Path, body: Sequence[str]) -> None:
    """Put ``body`` between the markers of ``path``, appending the section if it is absent.

    The file is read right before it is written, and text outside the markers is kept as is,
    because other benchmarks write other sections of the same page.
    """
    section = "\n".join([START_MARKER, *body, END_MARKER])
    text = path.read_text(encoding="utf-8") if path.exists() else "# Results\n"
    if START_MARKER in text and END_MARKER in text:
        head, rest = text.split(START_MARKER, 1)
        tail = rest.split(END_MARKER, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def machine_name() -> str:
    """Return the CPU model (from /proc/cpuinfo where it exists) and the number of cores."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores"


def settings_lines(record: dict[str, Any]) -> list[str]:
    """Return the Markdown lines that state how the numbers were measured."""
    train = ", ".join(
        f"{method} {np.mean(seconds):.0f} s" for method, seconds in record["train_seconds"].items()
    )
    wall = f"{record['total_seconds']:.0f} s in all"
    if record["loaded"]:
        wall = f"{record['total_seconds']:.0f} s to sample and score the loaded models (`--load`)"
    return [
        f"Settings: `{record['command']}`. Data, network and optimizer of"
        " `dlpm/configs/2d_data.yml`: 20,000 training points, an MLP of 4 blocks of 64 units,"
        f" AdamW at lr 5e-3 and batch 1024. Each model trains for {record['epochs']} epochs"
        f" ({record['steps']} optimizer steps). DLPM uses T = 100 training steps, and LIM its"
        f" defaults (`lim.clamp_eps` 20). Seeds {record['seeds']} drive training and sampling."
        f" Each evaluation scores {record['nsamples']} samples of the raw model (not the EMA)"
        " against 20,000 held-out points. W1 uses `ot.emd2` on 2000 points per set, the MSLE"
        " compares the norm quantiles at levels 0.95 to 1, and the tail mass is the fraction"
        " beyond the real 0.99 norm quantile (0.01 is exact). Cells give the mean over seeds"
        " and the min-max range.",
        "",
        f"Date {record['date']}. Machine: {record['machine']}, {record['threads']} torch thread,"
        " shared with other"
        f" jobs; torch {record['torch']}. Wall time: {wall}; training per seed {train}.",
    ]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])

    parser.add_argument("--epochs", type=int, default=50, help="training epochs of each model")
    parser.add_argument("--nsamples", type=int, default=10_000, help="samples per evaluation")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of training and sampling"
    )
    parser.add_argument(
        "--steps", type=int, nargs="+", default=[10, 25, 50, 100, 500], help="reverse steps"
    )
    parser.add_argument(
        "--alpha-weight-steps",
        type=int,
        nargs="*",
        default=[25, 100],
        help="step counts of the LIM SDE with score weight alpha (the public LIM sampler)",
    )
    parser.add_argument(
        "--unclipped-steps",
        type=int,
        nargs="*",
        default=[100, 500],
        help="step counts of the LIM SDE without the clip of the stable draws",
    )
    parser.add_argument("--load", action="store_true", help="load the trained models")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="only redraw the figure and rewrite the section from WORKDIR/results.json",
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path("models/dlpm_vs_lim"), help="run folders"
    )
    parser.add_argument(
        "--image", type=Path, default=ROOT / "img" / "dlpm_vs_lim_steps.png", help="figure"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="results page to write the section to"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return parser.parse_args()


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Train (or load), sample and score every case; return the record of results.json."""
    start = time.perf_counter()
    rows, floors = [], []
    train_seconds: dict[str, list[float]] = {"dlpm": [], "lim": []}
    steps_per_model = 0
    for seed in args.seeds:
        experiments = {}
        for method in ("dlpm", "lim"):
            experiments[method], seconds = train_or_load(method, seed, args)
            train_seconds[method].append(seconds)
            print(f"seed {seed} {method}: {experiments[method].epoch} epochs, {seconds:.0f} s")
        steps_per_model = experiments["dlpm"].trainer.state.step
        seed_rows, floor = measure(experiments, seed, args)
        rows += seed_rows
        floors.append(floor)
    total = time.perf_counter() - start
    previous = args.workdir / "results.json"
    if args.load and previous.exists():
        # Loaded models took no training here; keep the times of the run that trained them.
        train_seconds = json.loads(previous.read_text())["train_seconds"]

    return {
        "command": "python benchmarks/dlpm_vs_lim.py"
        f" --epochs {args.epochs} --nsamples {args.nsamples}"
        f" --seeds {' '.join(map(str, args.seeds))} --steps {' '.join(map(str, args.steps))}"
        f" --alpha-weight-steps {' '.join(map(str, args.alpha_weight_steps))}"
        f" --unclipped-steps {' '.join(map(str, args.unclipped_steps))}",
        "summary": summarize(rows),
        "rows": rows,
        "real_vs_real": {key: float(np.mean([f[key] for f in floors])) for key in floors[0]},
        "train_seconds": train_seconds,
        "total_seconds": total,
        "loaded": args.load,
        "epochs": args.epochs,
        "steps": steps_per_model,
        "seeds": args.seeds,
        "nsamples": args.nsamples,
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": machine_name(),
        "date": datetime.date.today().isoformat(),
    }


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    results = args.workdir / "results.json"
    if args.report_only:
        record = json.loads(results.read_text())
        modified = datetime.date.fromtimestamp(results.stat().st_mtime).isoformat()
        record.setdefault("date", modified)
    else:
        record = run_benchmark(args)
        args.workdir.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(record, indent=2))

    plot(record["summary"], record["real_vs_real"], args.image)
    table = markdown_table(record["summary"], record["real_vs_real"])
    print("\n".join(table))
    print(f"wall time {record['total_seconds']:.0f} s; figure {args.image}; numbers {results}")
    if args.out is not None:
        body = ["## DLPM against LIM", ""]
        for paragraph in settings_lines(record):
            body.append(textwrap.fill(paragraph, 100, break_on_hyphens=False))
        figure = os.path.relpath(args.image.resolve(), args.out.resolve().parent)
        body += ["", f"![DLPM against LIM across reverse steps]({figure})", "", *table, ""]
        write_section(args.out, body)


if __name__ == "__main__":
    main()
