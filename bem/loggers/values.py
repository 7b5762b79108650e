"""Conversions for tracker loggers: config flattening, scalars, images and artifact names."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

# Key separator of a flattened config: {"data": {"alpha": 1.7}} becomes {"data.alpha": 1.7}.
PARAM_SEPARATOR = "."


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into one level with dotted keys.

    Args:
        params: the resolved config, sections nested as mappings.
        prefix: key prefix of this level (used by the recursion).

    Returns:
        ``{"section.key": value}``; values that are not mappings are kept as they are.
    """
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{PARAM_SEPARATOR}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, name))
        else:
            flat[name] = value
    return flat


def param_text(value: Any) -> str:
    """Format a config value as the string a tracker stores: ``None``, ``1.7``, ``(1, 2)``."""
    if isinstance(value, list | tuple):
        return "(" + ", ".join(param_text(v) for v in value) + ")"
    return str(value)


def as_scalar(value: Any) -> float | None:
    """Return ``value`` as a float when it is one number, None otherwise.

    Accepts Python numbers and bools, numpy scalars and one-element tensors or arrays.
    NaN and infinities are returned as they are.
    """
    if isinstance(value, bool | int | float | np.number | np.bool_):
        return float(value)
    # torch tensors count elements with numel(), numpy arrays with the size attribute.
    numel = value.numel() if hasattr(value, "numel") else getattr(value, "size", None)
    if numel == 1 and hasattr(value, "item"):
        item = value.item()
        if isinstance(item, bool | int | float):
            return float(item)
    return None


def scalar_items(key: str, value: Any) -> Iterator[tuple[str, float]]:
    """Yield the scalars of one logged value: ``(key, x)``, or ``(key/i, x_i)`` for a sequence.

    Yields nothing for a value that contains no numbers (a string, None, a nested structure).
    """
    scalar = as_scalar(value)
    if scalar is not None:
        yield key, scalar
        return
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if isinstance(value, list | tuple):
        scalars = [as_scalar(v) for v in value]
        if scalars and all(s is not None for s in scalars):
            for index, scalar in enumerate(scalars):
                yield f"{key}/{index}", scalar


def plain_config(value: Any) -> Any:
    """Copy a config into dicts, lists and scalars that ``yaml.safe_dump`` accepts.

    Tuples become lists and any other object its ``str``.
    """
    if isinstance(value, Mapping):
        return {str(k): plain_config(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_config(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def image_array(image: Any) -> np.ndarray:
    """Turn an image file or a batch of images into one ``(H, W, 3)`` uint8 array.

    Args:
        image: a path to a PNG, JPEG or GIF file, or a tensor of shape ``(B, C, H, W)`` or
            ``(C, H, W)`` with ``C`` 1 or 3. A GIF gives its last frame, which for a
            reverse-process animation shows the final samples. Tensor values are in [-1, 1],
            the range of ``bem.plots.image_grid``, and values outside are clipped. A batch is
            tiled into a grid of 8 images per row.

    Returns:
        array of shape ``(H, W, 3)``, dtype uint8.

    Raises:
        ValueError: for a tensor of another rank or channel count.
    """
    if isinstance(image, str | Path):
        return _file_array(Path(image))
    return _tensor_array(image)


def _file_array(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as handle:
        if getattr(handle, "n_frames", 1) > 1:
            handle.seek(handle.n_frames - 1)
        return np.asarray(handle.convert("RGB"))


def _tensor_array(images: Any) -> np.ndarray:
    import torch
    from torchvision.utils import make_grid

    if not isinstance(images, torch.Tensor) or images.ndim not in (3, 4):
        shape = getattr(images, "shape", type(images).__name__)
        raise ValueError(
            f"image must be a file path or a tensor of shape (B, C, H, W) or (C, H, W), got {shape}"
        )
    batch = images if images.ndim == 4 else images.unsqueeze(0)
    if batch.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got shape {tuple(images.shape)}")
    batch = (batch.detach().float().cpu().clamp(-1.0, 1.0) + 1.0) / 2.0
    grid = make_grid(batch, nrow=8, padding=2)  # (3, H, W): make_grid repeats one channel
    return (grid.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)


def artifact_folder(key: str) -> str:
    """Turn a metric key such as ``scatter/ema_0.999`` into a safe relative artifact folder.

    Characters other than letters, digits, ``_ . - /`` become ``_``; empty and ``..`` parts
    are dropped, so the result never leaves the artifact root.
    """
    cleaned = re.sub(r"[^A-Za-z0-9_.\-/]", "_", key)
    parts = [part for part in cleaned.split("/") if part not in ("", ".", "..")]
    return "/".join(parts) or "unnamed"
