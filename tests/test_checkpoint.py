"""Checkpoint files: atomic writes, safe loading, clear errors, RNG state round trips."""

import os
import pickle
import random

import numpy as np
import pytest
import torch

import bem.files
from bem.checkpoint import (
    CheckpointError,
    capture_rng_state,
    list_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def _state(value: float) -> dict:
    return {
        "epoch": 3,
        "models": {"default": {"weight": torch.full((4, 2), value)}},
        "config": {"seed": 0, "training": {"ema_rates": [0.9]}},
        "extra": {"history": {"loss": [1.0, 0.5]}},
    }


class _WritesMarker:
    """Unpickling this object would create the file ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_round_trip(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint_3.pt", _state(1.5))
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3
    assert torch.equal(loaded["models"]["default"]["weight"], torch.full((4, 2), 1.5))
    assert loaded["config"]["training"]["ema_rates"] == [0.9]


def test_list_checkpoints_sorted_by_epoch(tmp_path):
    for epoch in (10, 2, 1):
        save_checkpoint(tmp_path / f"checkpoint_{epoch}.pt", _state(0.0))
    (tmp_path / "checkpoint_x.pt").write_text("not a checkpoint name")
    assert list(list_checkpoints(tmp_path)) == [1, 2, 10]


def test_failure_before_rename_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_1.pt"
    save_checkpoint(path, _state(1.0))
    before = path.read_bytes()

    def failing_replace(source, target):
        raise OSError("simulated crash between write and rename")

    monkeypatch.setattr(bem.files.os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(path, _state(2.0))
    monkeypatch.undo()

    assert path.read_bytes() == before
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["models"]["default"]["weight"], torch.full((4, 2), 1.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_1.pt"]


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "checkpoint_9.pt"
    with pytest.raises(CheckpointError, match="checkpoint not found") as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)


def test_truncated_file_names_path(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint_1.pt", _state(1.0))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)


# Plain pickles use protocol 4, about which torch's weights_only loader warns before it fails.
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_plain_pickle_is_rejected(tmp_path):
    path = tmp_path / "checkpoint_1.pt"
    with path.open("wb") as handle:
        pickle.dump({"weights": [1, 2, 3]}, handle)
    with pytest.raises(CheckpointError, match="was not loaded") as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)


def test_foreign_torch_file_is_rejected(tmp_path):
    path = tmp_path / "checkpoint_1.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match="not a bem checkpoint"):
        load_checkpoint(path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_crafted_pickle_does_not_run_code(tmp_path, writer):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "checkpoint_1.pt"
    payload = {"format": "bem.checkpoint", "version": 1, "evil": _WritesMarker(str(marker))}
    if writer == "torch":
        torch.save(payload, path)
    else:
        with path.open("wb") as handle:
            pickle.dump(payload, handle)
    with pytest.raises(CheckpointError, match="not loaded|truncated or corrupt"):
        load_checkpoint(path)
    assert not marker.exists()


def test_save_rejects_arbitrary_objects(tmp_path):
    with pytest.raises(TypeError, match="weights_only"):
        save_checkpoint(tmp_path / "checkpoint_1.pt", {"model": object()})
    assert list(tmp_path.iterdir()) == []


def test_rng_state_round_trip(tmp_path):
    generator = torch.Generator().manual_seed(5)
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    state = capture_rng_state({"data_order": generator})
    path = save_checkpoint(tmp_path / "checkpoint_1.pt", {"rng": state})
    expected = (
        torch.rand(3),
        np.random.rand(3),
        random.random(),
        torch.rand(3, generator=generator),
    )

    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    generator.manual_seed(99)
    restore_rng_state(load_checkpoint(path)["rng"], {"data_order": generator})
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]
    assert torch.equal(torch.rand(3, generator=generator), expected[3])


def test_restore_requires_every_generator():
    state = capture_rng_state({})
    with pytest.raises(CheckpointError, match="noise"):
        restore_rng_state(state, {"noise": torch.Generator()})


def test_atomic_write_leaves_no_temporary_on_error(tmp_path):
    target = tmp_path / "file.json"
    with pytest.raises(RuntimeError):
        with bem.files.atomic_write(target, "w") as handle:
            handle.write("partial")
            raise RuntimeError("stop")
    assert os.listdir(tmp_path) == []
