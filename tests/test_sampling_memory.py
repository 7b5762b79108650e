"""Sampler memory does not grow with the number of reverse steps.

torch allocates tensors outside Python's allocator, so tracemalloc cannot see them; each case
runs in a fresh process and reports its peak resident set size. Holding a full-size noise
sequence, as ``(T, B, C, H, W)`` tensors of ``A`` and ``Sigma``, would add about
2 * 1000 * 128 * 256 * 4 bytes = 262 MB at 1000 steps for the shape used here.
"""

import json
import subprocess
import sys

import pytest

SCRIPT = """
import json, resource, torch
from dlpm.methods.GenerativeLevyProcess import GenerativeLevyProcess
torch.set_num_threads(1)

class Identity(torch.nn.Module):
    def forward(self, x, tau):
        return x

process = GenerativeLevyProcess(1.7, "cpu", {steps}, isotropic={isotropic})
process.sample({{"default": Identity()}}, (128, 1, 16, 16), deterministic=False,
               generator=torch.Generator().manual_seed(0))
print(json.dumps({{"peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""


def peak_rss_kb(steps: int, isotropic: bool) -> int:
    code = SCRIPT.format(steps=steps, isotropic=isotropic)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_kb"]


@pytest.mark.parametrize("isotropic", [True, False])
def test_sampling_memory_does_not_grow_with_steps(isotropic):
    short = peak_rss_kb(100, isotropic)
    long = peak_rss_kb(1000, isotropic)
    # 20 MB covers allocator noise; a stored sequence would add hundreds of MB.
    assert long - short < 20_000, (short, long)
