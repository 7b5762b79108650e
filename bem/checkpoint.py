"""Checkpoint files: atomic writes, safe loading and random-number-generator states.

A checkpoint is a dict of tensors, plain containers (dict, list, tuple) and primitives, written
with ``torch.save`` through :func:`bem.files.atomic_write` and read back with
``torch.load(..., weights_only=True)``. The restricted unpickler of ``weights_only`` rejects
any other object, so a crafted file cannot run code on loading. Random-number-generator states
are stored in that form too (tensors and lists), see :func:`capture_rng_state`.

Layout of a checkpoint dict (keys written by :class:`bem.Experiments.Experiment`)::

    format, version        identify the file as a bem checkpoint
    epoch, step            completed epochs and optimizer steps
    models, ema            state dicts of the models and of their EMA copies
    optimizers, lr_schedules
    rng                    torch, cuda, numpy, python and named generator states
    config                 the resolved config dict
    extra                  counters (skipped batches, seed in use)
"""

from __future__ import annotations

import logging
import pickle
import random
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bem.files import atomic_write

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "capture_rng_state",
    "checkpoint_path",
    "list_checkpoints",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "bem.checkpoint"
CHECKPOINT_VERSION = 1
_NAME = re.compile(r"^checkpoint_(\d+)\.pt$")
_PLAIN_TYPES = (str, int, float, bool, type(None), torch.Tensor, torch.dtype, torch.Size)


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, unsafe or not a bem checkpoint."""


def checkpoint_path(run_dir: str | Path, epoch: int) -> Path:
    """Return the path of the checkpoint of ``epoch`` in ``run_dir``."""
    return Path(run_dir) / f"checkpoint_{int(epoch)}.pt"


def list_checkpoints(run_dir: str | Path) -> dict[int, Path]:
    """Map epoch to checkpoint path for every checkpoint file in ``run_dir``, sorted by epoch."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return {}
    found = {}
    for path in run_dir.iterdir():
        match = _NAME.match(path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def _check_plain(value: Any, where: str) -> None:
    """Raise TypeError if ``value`` contains an object that ``weights_only`` loading rejects."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise TypeError(f"checkpoint key {where}[{key!r}] must be a str or int")
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
    elif not isinstance(value, _PLAIN_TYPES):
        raise TypeError(
            f"checkpoint entry {where} has type {type(value).__name__}; store only tensors,"
            " dicts, lists and primitives so the file loads with weights_only=True"
        )


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` atomically to ``path`` (temporary file, fsync, ``os.replace``).

    Args:
        path: target file; its folder must exist.
        state: checkpoint dict of tensors, plain containers and primitives.

    Returns:
        the path written.

    Raises:
        TypeError: if ``state`` contains another kind of object.
    """
    path = Path(path)
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    _check_plain(payload, "state")
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)
    logger.debug("saved checkpoint %s", path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, without running pickled code.

    Args:
        path: checkpoint file.
        map_location: device for the loaded tensors.

    Returns:
        the checkpoint dict.

    Raises:
        CheckpointError: if the file is missing, truncated, contains objects other than
            tensors and plain containers, or is not a bem checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        logger.debug("weights_only loading of %s failed: %s", path, error)
        raise CheckpointError(
            f"checkpoint {path} was not loaded: it is not a bem checkpoint, or it contains objects"
            " other than tensors and plain containers, whose loading could run code"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        reason = (str(error).strip().splitlines() or [""])[0][:160]
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt and cannot be read"
            f" ({type(error).__name__}: {reason}); move it out of the run folder to fall back"
            " to an earlier checkpoint"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a bem checkpoint (missing format tag)")
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {state.get('version')!r}; this bem reads"
            f" version {CHECKPOINT_VERSION}"
        )
    return state


def capture_rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Return the global torch, CUDA, numpy and python RNG states and those of ``generators``.

    Every state is a tensor or a list, so the checkpoint loads with ``weights_only=True``.
    """
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    assert np_name == "MT19937", np_name
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    return state


def restore_rng_state(
    state: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None
) -> None:
    """Restore the states captured by :func:`capture_rng_state`, in place.

    Raises:
        CheckpointError: if a named generator has no stored state.
    """
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].cpu().numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate(
        (python_state["version"], tuple(python_state["internal"]), python_state["gauss"])
    )
    stored = state.get("generators", {})
    for name, generator in (generators or {}).items():
        if name not in stored:
            raise CheckpointError(f"checkpoint has no state for the random generator '{name}'")
        generator.set_state(stored[name].cpu())
