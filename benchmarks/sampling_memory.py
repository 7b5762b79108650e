"""Measure the extra memory of DLPM sampling against the number of reverse steps.

Each case runs in a fresh process with a network that returns its input, so the figure is the
sampler's own memory: peak resident set size minus the size right before sampling. The original
implementation held about 3.6 GB of noise sequence to sample 256 MNIST-sized images with 1000
steps, before the first network call.

    python benchmarks/sampling_memory.py [--batch 256] [--steps 100 1000]
"""

import argparse
import json
import subprocess
import sys

CASE = """
import json, resource, torch
from dlpm.methods.GenerativeLevyProcess import GenerativeLevyProcess
torch.set_num_threads(1)

class Identity(torch.nn.Module):
    def forward(self, x, tau):
        return x

process = GenerativeLevyProcess(1.7, "cpu", {steps}, isotropic={isotropic})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
process.sample({{"default": Identity()}}, ({batch}, 1, 28, 28), deterministic=False,
               generator=torch.Generator().manual_seed(0))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"extra_mb": (after - before) / 1024}}))
"""


def extra_memory_mb(steps: int, isotropic: bool, batch: int) -> float:
    code = CASE.format(steps=steps, isotropic=isotropic, batch=batch)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])["extra_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="images of 1x28x28 per batch")
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 1000], help="reverse steps")
    args = parser.parse_args()

    image_mb = args.batch * 28 * 28 * 4 / 2**20
    print(f"batch {args.batch} x 1 x 28 x 28 float32 = {image_mb:.2f} MB per tensor")
    print("| noise | reverse steps | extra peak memory (MB) |")
    print("|---|---|---|")
    for isotropic in (True, False):
        for steps in args.steps:
            extra = extra_memory_mb(steps, isotropic, args.batch)
            label = "isotropic" if isotropic else "non-isotropic"
            print(f"| {label} | {steps} | {extra:.1f} |")


if __name__ == "__main__":
    main()
