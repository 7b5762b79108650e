"""Measure training and generation throughput of configs as users run them.

For each config: training steps per second with data loading included (batches from the
experiment's own batch source), the share of a step spent outside the network (noise, schedule,
loss), and for 2D configs the time to draw 10,000 samples with the stochastic and the
deterministic sampler.

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


def training_step_ms(experiment: Experiment, steps: int) -> float:
    """Median milliseconds per optimizer step over epochs cut to ``steps`` batches."""
    trainer = experiment.trainer
    trainer.n_max_batch = steps
    trainer.train_epoch()  # warm-up
    per_step = []
    for _ in range(3):
        start = time.perf_counter()
        stats = trainer.train_epoch()
        per_step.append((time.perf_counter() - start) / stats.steps)
    return 1e3 * statistics.median(per_step)


def network_step_ms(experiment: Experiment, repeats: int) -> float:
    """Median milliseconds of forward, backward and optimizer step of the network alone."""
    net = experiment.models["default"]
    optimizer = experiment.optimizers["default"]
    batch = next(iter(experiment.batches.epoch()))
    # Integer steps over T, as the training loss feeds the network.
    steps = experiment.method.process.reverse_steps
    tau = torch.randint(1, steps, (batch.shape[0],), device=batch.device) / steps
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        out = net(batch, tau)
        optimizer.zero_grad(set_to_none=True)
        out.square().mean().backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times[1:])


def sampling_seconds(
    experiment: Experiment, deterministic: bool, n: int, repeats: int = 3
) -> float:
    """Median seconds to draw ``n`` samples in one batch with the configured reverse steps."""
    process = experiment.method.process
    net = experiment.models["default"]
    steps = experiment.config.sampling.reverse_steps
    shape = (n,) + tuple(experiment.data.item_shape)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        process.sample({"default": net}, shape, steps, deterministic=deterministic)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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
            net_ms = network_step_ms(experiment, args.steps)
            outside = max(0.0, 1.0 - net_ms / step_ms)
            line = (
                f"{config}: batch {batch}, {step_ms:.2f} ms/step ({1e3 / step_ms:.1f} steps/s),"
                f" network alone {net_ms:.2f} ms, outside the network {100 * outside:.1f}%"
            )
            if is_2d:
                line += f", {ORIGINAL_STEP_MS / step_ms:.2f}x the original's speed"
            print(line)

            if is_2d:
                for mode in ("stochastic", "deterministic"):
                    seconds = sampling_seconds(experiment, mode == "deterministic", 10_000)
                    print(
                        f"  10,000 samples, {experiment.config.sampling.reverse_steps} {mode}"
                        f" steps: {seconds:.2f} s ({10_000 / seconds:.0f} samples/s),"
                        f" {ORIGINAL_SAMPLE_S[mode] / seconds:.2f}x the original's speed"
                    )


if __name__ == "__main__":
    main()
