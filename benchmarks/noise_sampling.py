"""Time alpha-stable noise sampling against torch.randn and scipy's levy_stable.rvs.

For each shape and isotropy, prints the median time of drawing eps divided by the median time of
torch.randn of the same shape in the same process, and the same ratio for scipy's sampler. Runs
on one CPU thread, as the targets are stated for it.

    python benchmarks/noise_sampling.py [--alpha 1.7] [--repeats 50]
"""

import argparse
import platform
import statistics
import time

import torch
from scipy.stats import levy_stable

from bem.datasets.stable import sample_sas

SHAPES = [(1024, 2), (256, 1, 32, 32), (128, 3, 32, 32)]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_times(fn, reference, repeats: int) -> tuple[float, float, float]:
    """Return the median times of ``fn`` and ``reference`` and the median of their ratios.

    The two calls alternate, so a load from other processes affects both sides of each ratio.
    """
    fn(), reference()  # warm-up
    pairs = [(timed(fn), timed(reference)) for _ in range(repeats)]
    ours = statistics.median(p[0] for p in pairs)
    ref = statistics.median(p[1] for p in pairs)
    return ours, ref, statistics.median(p[0] / p[1] for p in pairs)


def scipy_sas(alpha: float, shape: tuple[int, ...], isotropic: bool):
    """Draw eps as the original implementation did: A from scipy, multiplied in torch."""
    n = shape[0] if isotropic else int(torch.Size(shape).numel())
    scale = 2 * torch.cos(torch.tensor(torch.pi * alpha / 4)).item() ** (2 / alpha)
    a = torch.from_numpy(levy_stable.rvs(alpha / 2, 1, loc=0, scale=scale, size=n)).float()
    a = a.reshape((shape[0],) + (1,) * (len(shape) - 1)) if isotropic else a.reshape(shape)
    return a.sqrt() * torch.randn(shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=1.7, help="tail index of the noise")
    parser.add_argument("--repeats", type=int, default=50, help="timed repetitions per case")
    args = parser.parse_args()
    torch.set_num_threads(1)

    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread")
    print(f"alpha = {args.alpha}, median of {args.repeats} draws")
    columns = ["shape", "isotropic", "randn (us)", "ours (us)", "ours / randn", "scipy / randn"]
    print("| " + " | ".join(columns + ["speed-up over scipy"]) + " |")
    print("|---|---|---|---|---|---|---|")
    for shape in SHAPES:
        for isotropic in (True, False):

            def draw_ours(shape=shape, isotropic=isotropic):
                return sample_sas(args.alpha, shape, isotropic=isotropic)

            def draw_randn(shape=shape):
                return torch.randn(shape)

            def draw_scipy(shape=shape, isotropic=isotropic):
                return scipy_sas(args.alpha, shape, isotropic)

            ours, randn, ratio = median_times(draw_ours, draw_randn, args.repeats)
            scipy_repeats = max(3, args.repeats // 10)
            scipy, _, scipy_ratio = median_times(draw_scipy, draw_randn, scipy_repeats)
            print(
                f"| {shape} | {isotropic} | {randn * 1e6:.0f} | {ours * 1e6:.0f} | "
                f"{ratio:.2f} | {scipy_ratio:.1f} | {scipy / ours:.0f}x |"
            )


if __name__ == "__main__":
    main()
