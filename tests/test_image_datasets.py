"""Image data sets: real file formats written small, long-tail counts, digits, image folders."""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bem.datasets.images import (
    IMAGE_DATASETS,
    DatasetFilesMissingError,
    dataset_channels,
    from_model_range,
    get_image_dataset,
    long_tail_counts,
    read_idx,
    resolve_data_dir,
    to_model_range,
)


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    """Write ``array`` (uint8) in the IDX format: 0, 0, type 0x08, ndim, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def make_mnist(root: Path, n_train: int = 12, n_test: int = 6, compress: bool = True) -> dict:
    rng = np.random.default_rng(0)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, compress)
        arrays[prefix] = (images, labels)
    return arrays


def make_cifar(root: Path, per_class_per_batch: int = 4) -> dict:
    """Write the python batches: dicts with 'data' (n, 3072) uint8 rows (R, G, B planes) and
    'labels' lists, plus batches.meta, as in cifar-10-python.tar.gz."""
    rng = np.random.default_rng(1)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = np.repeat(np.arange(10), per_class_per_batch)
        rng.shuffle(labels)
        data = rng.integers(0, 256, size=(labels.size, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as handle:
            pickle.dump({"batch_label": name, "data": data, "labels": labels.tolist()}, handle)
        batches[name] = (data, labels)
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump(meta, handle)
    return batches


def snapshot(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_reads_idx_files(tmp_path, compress):
    arrays = make_mnist(tmp_path, compress=compress)
    for train, prefix in ((True, "train"), (False, "t10k")):
        dataset = get_image_dataset("mnist", data_dir=tmp_path, train=train)
        images, labels = arrays[prefix]
        assert len(dataset) == len(labels)
        image, label = dataset[3]
        assert image.shape == (1, 28, 28)
        assert image.dtype == torch.float32
        expected = torch.from_numpy(images[3]).float() / 255.0 * 2.0 - 1.0
        torch.testing.assert_close(image[0], expected)
        assert label == int(labels[3])


def test_mnist_resizes_to_image_size(tmp_path):
    make_mnist(tmp_path)
    image, _ = get_image_dataset("mnist", data_dir=tmp_path, image_size=32)[0]
    assert image.shape == (1, 32, 32)
    assert image.min() >= -1.0
    assert image.max() <= 1.0


def test_cifar10_reads_python_batches(tmp_path):
    batches = make_cifar(tmp_path)
    train = get_image_dataset("cifar10", data_dir=tmp_path, train=True)
    assert len(train) == 5 * 40
    # Rows of data_batch_2 follow the 40 rows of data_batch_1, in file order.
    data, labels = batches["data_batch_2"]
    image, label = train[40 + 7]
    assert image.shape == (3, 32, 32)
    # Each row contains the 1024 red values, then green, then blue, row-major.
    expected = torch.from_numpy(data[7].reshape(3, 32, 32)).float() / 255.0 * 2.0 - 1.0
    torch.testing.assert_close(image, expected)
    assert label == int(labels[7])

    test = get_image_dataset("cifar10", data_dir=tmp_path, train=False)
    assert len(test) == 40
    assert test[0][1] == int(batches["test_batch"][1][0])


def test_long_tail_counts_cifar10_profile():
    counts = long_tail_counts(5000, 10, 100)
    assert counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(counts) == 12406


def test_cifar10_lt_class_counts(tmp_path):
    make_cifar(tmp_path, per_class_per_batch=4)  # 20 images per class in the training set
    dataset = get_image_dataset("cifar10_lt", data_dir=tmp_path, imbalance_factor=10)
    labels = dataset.labels.numpy()
    # floor(20 * 10**(-c/9)) for c = 0..9
    expected = [20, 15, 11, 9, 7, 5, 4, 3, 2, 2]
    assert np.bincount(labels, minlength=10).tolist() == expected


def test_cifar10_lt_choice_is_seeded(tmp_path):
    make_cifar(tmp_path)
    first = get_image_dataset("cifar10_lt", data_dir=tmp_path, imbalance_factor=10, seed=0)
    again = get_image_dataset("cifar10_lt", data_dir=tmp_path, imbalance_factor=10, seed=0)
    other = get_image_dataset("cifar10_lt", data_dir=tmp_path, imbalance_factor=10, seed=1)
    assert torch.equal(first.images, again.images)
    assert not torch.equal(first.images, other.images)


def test_cifar10_lt_test_split_is_balanced(tmp_path):
    make_cifar(tmp_path)
    labels = get_image_dataset("cifar10_lt", data_dir=tmp_path, train=False).labels
    assert torch.bincount(labels).tolist() == [4] * 10


def test_long_tail_rejects_factor_below_one():
    with pytest.raises(ValueError, match="imbalance_factor"):
        long_tail_counts(100, 10, 0.5)


def test_digits_shape_and_range():
    dataset = get_image_dataset("digits")
    assert len(dataset) == 1797
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    assert images.shape == (1797, 1, 8, 8)
    # load_digits stores 0..16, and both ends occur: 0 -> -1, 16 -> 1.
    assert images.min() == -1.0
    assert images.max() == 1.0
    assert {dataset[i][1] for i in range(len(dataset))} == set(range(10))


def test_digits_resized_bilinear():
    small = get_image_dataset("digits")
    large = get_image_dataset("digits", image_size=16)
    image, _ = large[5]
    assert image.shape == (1, 16, 16)
    # Bilinear upsampling by 2 keeps the mean up to border effects (about 1/8 of the pixels).
    assert abs(float(image.mean() - small[5][0].mean())) < 0.1


def test_random_flip_flips_some_images():
    plain = get_image_dataset("digits")
    flipped = get_image_dataset("digits", random_flip=True)
    torch.manual_seed(0)
    outcomes = []
    for i in range(64):
        image = flipped[i][0]
        if torch.equal(image, plain[i][0]):
            outcomes.append(False)
        else:
            torch.testing.assert_close(image, plain[i][0].flip(-1))
            outcomes.append(True)
    # A symmetric digit looks unflipped; 64 fair coin flips give 0 or 64 heads with
    # probability 2**-63, so both outcomes must appear.
    assert any(outcomes)
    assert not all(outcomes)


def write_png(path: Path, value: int, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)


def test_image_folder_labels_from_subfolders(tmp_path):
    write_png(tmp_path / "cats" / "a.png", 255, (10, 10))
    write_png(tmp_path / "dogs" / "b.png", 0, (10, 10))
    write_png(tmp_path / "dogs" / "deep" / "c.PNG", 0, (10, 10))
    dataset = get_image_dataset("image_folder", data_dir=tmp_path)
    assert len(dataset) == 3
    assert [dataset[i][1] for i in range(3)] == [0, 1, 1]
    image, _ = dataset[0]
    assert image.shape == (3, 10, 10)
    assert torch.all(image == 1.0)


def test_image_folder_flat_gets_label_zero(tmp_path):
    write_png(tmp_path / "a.png", 128, (12, 20))
    write_png(tmp_path / "sub" / "b.jpg", 128, (30, 30))
    dataset = get_image_dataset("image_folder", data_dir=tmp_path, image_size=8)
    assert [dataset[i][1] for i in range(2)] == [0, 0]
    assert dataset[0][0].shape == (3, 8, 8)


def test_image_folder_mixed_sizes_need_image_size(tmp_path):
    write_png(tmp_path / "a.png", 0, (8, 8))
    write_png(tmp_path / "b.png", 0, (16, 16))
    with pytest.raises(ValueError, match="image_size"):
        get_image_dataset("image_folder", data_dir=tmp_path)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar10_lt", "celeba", "image_folder"])
def test_missing_files_raise_and_write_nothing(tmp_path, name):
    (tmp_path / "unrelated.txt").write_text("x")
    before = snapshot(tmp_path)
    root = tmp_path / "data"
    with pytest.raises(DatasetFilesMissingError, match=str(root)):
        get_image_dataset(name, data_dir=root)
    assert snapshot(tmp_path) == before


def test_missing_files_error_is_file_not_found():
    assert issubclass(DatasetFilesMissingError, FileNotFoundError)


def test_missing_mnist_message_names_files(tmp_path):
    with pytest.raises(DatasetFilesMissingError, match="train-images-idx3-ubyte.gz"):
        get_image_dataset("mnist", data_dir=tmp_path)


def test_resolve_data_dir_order(monkeypatch, tmp_path):
    monkeypatch.setenv("DLPM_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("DLPM_DATA")
    assert resolve_data_dir(None) == Path("data")


def test_dataset_channels():
    assert dataset_channels("mnist") == 1
    assert dataset_channels("digits") == 1
    assert dataset_channels("cifar10_lt") == 3
    assert set(IMAGE_DATASETS) >= {"mnist", "cifar10", "cifar10_lt", "celeba", "digits"}


def test_unknown_dataset_rejected():
    with pytest.raises(ValueError, match="unknown image data set"):
        get_image_dataset("imagenet")


def test_model_range_round_trip():
    x = torch.linspace(0, 1, 11)
    torch.testing.assert_close(from_model_range(to_model_range(x)), x)
    assert to_model_range(torch.tensor(0.0)) == -1.0
    assert from_model_range(torch.tensor(3.0)) == 1.0


def test_read_idx_rejects_other_files(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x89PNG....")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)


def test_one_class_folder_gets_no_classifier_metrics(tmp_path, caplog):
    from bem.datasets.image_data import image_splits

    for index in range(4):
        write_png(tmp_path / f"{index}.png", 60 * index, (8, 8))
    data = {"dataset": "image_folder", "data_dir": str(tmp_path), "image_size": 8}
    splits = image_splits(data)
    assert splits.metrics is None
    assert "single class" in caplog.text
    two = tmp_path / "two"
    for index, folder in enumerate(("cats", "dogs", "cats", "dogs")):
        write_png(two / folder / f"{index}.png", 60 * index, (8, 8))
    assert image_splits({**data, "data_dir": str(two)}).metrics is not None
