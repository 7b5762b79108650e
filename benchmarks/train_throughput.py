"""Measure training and generation throughput of configs as users run them.

For each config: training steps per second with data loading included (batches from the
experiment's own batch source); the share of the loss's forward and backward pass spent
outside the network (noise, schedule, loss); and for 2D configs the time to draw 10,000
samples with the stochastic and with the deterministic sampler.

    python benchmarks/train_throughput.py [--configs 2d_data digits] [--threads 1]
"""

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bem.config import load_yaml, set_by_path
from bem.Experiments import Experiment
from dlpm.cli import config_path
from dlpm.dlpm_experiment import dlpm_init

# Original implementation, 2-core machine of the same kind, 2D config at batch 1024.
ORIGINAL_STEP_MS = 14.0
ORIGINAL_SAMPLE_S = {"stochastic": 2.1, "deterministic": 1.8}


def build_experiment(config: str, workdir: Path, overrides: dict) -> Experiment:
    p = load_yaml(config_path(config))
    for key, value in overrides.items():
        set_by_path(p, key, value)
    experiment = Experiment(workdir / config, p, init=dlpm_init())
    experiment.prepare()
    return experiment


# Timings behind each median. On a shared virtual machine single timings vary by 20% or more.
REPEATS = 7


def training_step_ms(experiment: Experiment, steps: int) -> float:
    """Median milliseconds per optimizer step over epochs cut to ``steps`` batches."""
    trainer = experiment.trainer
    trainer.n_max_batch = steps
    trainer.train_epoch()  # warm-up
    per_step = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        stats = trainer.train_epoch()
        per_step.append((time.perf_counter() - start) / stats.steps)
    return 1e3 * statistics.median(per_step)


def outside_network_share(experiment: Experiment, repeats: int) -> tuple[float, float]:
    """Return (network ms, share of the loss computation spent outside the network).

    Times, alternately on one batch, the method's loss with its backward pass and the
    network's forward and backward pass alone on inputs of the same shape; the difference is
    the noise draws, the schedule lookups and the loss itself. Optimizer, gradient clipping and
    EMA are left out: they cost the same for any method.
    """
    models = experiment.models
    net = models["default"]
    batch = next(iter(experiment.batches.epoch()))
    # Integer steps over T, as the training loss feeds the network.
    steps = experiment.method.process.reverse_steps
    tau = torch.randint(1, steps, (batch.shape[0],), device=batch.device) / steps

    def with_loss() -> None:
        net.zero_grad(set_to_none=True)
        experiment.method.loss(models, batch, generator=experiment.noise_generator).backward()

    def network_only() -> None:
        net.zero_grad(set_to_none=True)
        net(batch, tau).square().mean().backward()

    with_loss(), network_only()  # warm-up
    pairs = []
    for _ in range(repeats):
        start = time.perf_counter()
        with_loss()
        middle = time.perf_counter()
        network_only()
        pairs.append((middle - start, time.perf_counter() - middle))
    loss_seconds = statistics.median(p[0] for p in pairs)
    net_seconds = statistics.median(p[1] for p in pairs)
    return 1e3 * net_seconds, max(0.0, 1.0 - net_seconds / loss_seconds)


def sampling_seconds(experiment: Experiment, deterministic: bool, n: int) -> list[float]:
    """Return the seconds of :data:`REPEATS` draws of ``n`` samples in one batch."""
    process = experiment.method.process
    net = experiment.models["default"]
    steps = experiment.config.sampling.reverse_steps
    shape = (n,) + tuple(experiment.data.item_shape)
    process.sample({"default": net}, shape, steps, deterministic=deterministic)  # warm-up
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        process.sample({"default": net}, shape, steps, deterministic=deterministic)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["2d_data"], help="config names")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per epoch")
    parser.add_argument("--image_batch", type=int, default=32, help="batch size of image configs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.machine()}, {args.threads} thread(s)")

    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs:
            overrides = {"run.progress": False, "run.threads": args.threads, "run.device": "cpu"}
            p = load_yaml(config_path(config))
            is_2d = p.get("model", {}).get("model_type", "mlp") == "mlp"
            if not is_2d:
                overrides["training.batch_size"] = args.image_batch
            experiment = build_experiment(config, Path(tmp), overrides)
            batch = experiment.config.training.batch_size

            step_ms = training_step_ms(experiment, args.steps)
            net_ms, outside = outside_network_share(experiment, args.steps)
            line = (
                f"{config}: batch {batch}, {step_ms:.2f} ms/step ({1e3 / step_ms:.1f} steps/s),"
                f" network forward and backward {net_ms:.2f} ms, loss outside the network"
                f" {100 * outside:.1f}%"
            )
            if is_2d:
                line += f", {ORIGINAL_STEP_MS / step_ms:.2f}x the original's speed"
            print(line)

            if is_2d:
                for mode in ("stochastic", "deterministic"):
                    times = sampling_seconds(experiment, mode == "deterministic", 10_000)
                    seconds = statistics.median(times)
                    print(
                        f"  10,000 samples, {experiment.config.sampling.reverse_steps} {mode}"
                        f" steps: median {seconds:.2f} s of {REPEATS} draws (range"
                        f" {min(times):.2f} to {max(times):.2f}), {10_000 / seconds:.0f}"
                        f" samples/s, {ORIGINAL_SAMPLE_S[mode] / seconds:.2f}x the original's"
                        " speed"
                    )


if __name__ == "__main__":
    main()
