"""Batch sources for training: slices of a tensor, or a DataLoader over a Dataset.

Both shuffle with their own ``torch.Generator`` (the data order), whose state goes into the
checkpoint, so a resumed run gets the same batches as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["BatchSource", "LoaderBatches", "TensorBatches", "make_batch_source"]


@runtime_checkable
class BatchSource(Protocol):
    """Yields the training batches of one epoch, in an order that its state reproduces."""

    generator: torch.Generator

    def __len__(self) -> int:
        """Number of batches in a full epoch."""
        ...

    def epoch(self) -> Iterator[torch.Tensor]:
        """Yield the batches of the next epoch, each of shape (B, *item_shape)."""
        ...


class TensorBatches:
    """Serve a tensor in shuffled slices, one permutation per epoch.

    The data is moved to ``device`` once. Each epoch draws one permutation from ``generator``
    on the CPU, gathers the shuffled data once and yields contiguous slices of it, which is
    cheaper than indexing item by item through a DataLoader. The last batch of an epoch is
    smaller when ``batch_size`` does not divide the number of items.

    Args:
        data: tensor of shape (n, *item_shape).
        batch_size: items per batch.
        seed: seed of the data-order generator.
        device: where batches live.
    """

    def __init__(
        self, data: torch.Tensor, batch_size: int, seed: int, device: torch.device | str = "cpu"
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        if data.shape[0] == 0:
            raise ValueError("the training data is empty")
        self.data = data.to(device)
        self.batch_size = int(batch_size)
        self.generator = torch.Generator().manual_seed(int(seed))

    def __len__(self) -> int:
        return -(-self.data.shape[0] // self.batch_size)

    def epoch(self) -> Iterator[torch.Tensor]:
        order = torch.randperm(self.data.shape[0], generator=self.generator)
        shuffled = self.data[order.to(self.data.device)]
        yield from shuffled.split(self.batch_size)


class LoaderBatches:
    """Serve a Dataset through a DataLoader; items may be tensors or (tensor, label) pairs.

    Args:
        dataset: map-style data set.
        batch_size: items per batch.
        seed: seed of the data-order generator.
        device: where batches are moved.
        num_workers: DataLoader worker processes.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        device: torch.device | str = "cpu",
        num_workers: int = 0,
    ) -> None:
        self.generator = torch.Generator().manual_seed(int(seed))
        self.device = torch.device(device)
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            generator=self.generator,
            num_workers=num_workers,
            # Workers that live across epochs, so that no epoch pays for starting them again.
            persistent_workers=num_workers > 0,
            pin_memory=self.device.type == "cuda",
            drop_last=False,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self) -> Iterator[torch.Tensor]:
        for item in self.loader:
            batch = item[0] if isinstance(item, list | tuple) else item
            yield batch.to(self.device, non_blocking=True)


def make_batch_source(
    train: torch.Tensor | Dataset,
    batch_size: int,
    seed: int,
    device: torch.device | str,
    num_workers: int = 0,
) -> TensorBatches | LoaderBatches:
    """Pick :class:`TensorBatches` for a tensor and :class:`LoaderBatches` for a Dataset.

    ``num_workers`` sets the DataLoader worker processes of a Dataset.
    """
    if isinstance(train, torch.Tensor):
        return TensorBatches(train, batch_size, seed, device)
    return LoaderBatches(train, batch_size, seed, device, num_workers=num_workers)
