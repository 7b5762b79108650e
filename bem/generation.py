"""Sample generation in batches, with an optional reverse-process history."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from bem.protocol import GenerativeMethod

__all__ = ["GeneratedSamples", "eval_mode", "generate_samples"]


@dataclass(frozen=True)
class GeneratedSamples:
    """Samples on the CPU, shape (N, *item_shape), and optionally their history.

    ``history`` has shape (steps + 1, N_history, *item_shape), the states of the reverse
    process from the prior draw to the samples.
    """

    samples: torch.Tensor
    history: torch.Tensor | None = None


@contextlib.contextmanager
def eval_mode(models: Mapping[str, nn.Module]) -> Iterator[None]:
    """Put ``models`` in eval mode and restore each one's previous mode afterwards."""
    previous = {name: model.training for name, model in models.items()}
    for model in models.values():
        model.eval()
    try:
        yield
    finally:
        for name, model in models.items():
            model.train(previous[name])


@torch.no_grad()
def generate_samples(
    method: GenerativeMethod,
    models: Mapping[str, nn.Module],
    item_shape: tuple[int, ...],
    n: int,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    history_samples: int = 0,
    progress: bool = False,
) -> GeneratedSamples:
    """Draw ``n`` samples in batches of at most ``batch_size``.

    Args:
        method: the method whose sampler runs.
        models: the networks (the trained ones or their EMA copies).
        item_shape: shape of one sample, (2,) for 2D points.
        n: number of samples.
        batch_size: samples per sampler call.
        generator: drives all sampling noise.
        history_samples: keep the reverse-process states of the first this many samples
            (taken from the first batch, so at most ``batch_size``); 0 keeps none.
        progress: show a bar over the batches (when there are several) and the sampler's bar.

    Returns:
        the samples (and history) on the CPU.
    """
    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be positive, got n={n}, batch_size={batch_size}")
    from tqdm.auto import tqdm

    chunks, history = [], None
    starts = range(0, n, batch_size)
    # The outer bar counts sampler calls; each call may show its own bar over the steps.
    batches = tqdm(starts, desc="generating", unit="batch", disable=not progress or len(starts) < 2)
    with eval_mode(models):
        for start in batches:
            size = min(batch_size, n - start)
            shape = (size, *item_shape)
            want_history = history is None and history_samples > 0
            out = method.sample(
                models, shape, generator=generator, history=want_history, progress=progress
            )
            if want_history:
                out, states = out
                history = states[:, :history_samples].cpu()
            chunks.append(out.cpu())
    return GeneratedSamples(samples=torch.cat(chunks), history=history)
