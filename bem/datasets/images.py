"""Image data sets in the model range [-1, 1].

Every data set returned by :func:`get_image_dataset` yields ``(image, label)`` with ``image`` a
float32 tensor of shape (C, H, W) in [-1, 1] and ``label`` an int.

Files are read from a data root (:func:`resolve_data_dir`) and downloaded only on request. MNIST
and CIFAR-10 are read by this module's own readers of the original file formats, because
torchvision's classes reject some valid layouts of the real files. ``torchvision.datasets.MNIST``
(0.29) requires the decompressed files of both splits. ``torchvision.datasets.CIFAR10`` checks
the md5 of all six batch files even to load one split. torchvision still downloads them
(``download=True``) and reads CelebA.
"""

import gzip
import logging
import math
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

IMAGE_DATASETS = ("mnist", "cifar10", "cifar10_lt", "celeba", "digits", "image_folder")

_CHANNELS = {
    "mnist": 1,
    "cifar10": 3,
    "cifar10_lt": 3,
    "celeba": 3,
    "digits": 1,
    "image_folder": 3,
}

# Native sizes, used when image_size is None; None means "the size of the files".
_NATIVE_SIZES = {"mnist": 28, "cifar10": 32, "cifar10_lt": 32, "celeba": 64, "digits": 8}

_MNIST_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_FILES = {
    True: tuple(f"data_batch_{i}" for i in range(1, 6)),
    False: ("test_batch",),
}
_CELEBA_FILES = (
    "img_align_celeba/",
    "list_attr_celeba.txt",
    "identity_CelebA.txt",
    "list_bbox_celeba.txt",
    "list_landmarks_align_celeba.txt",
    "list_eval_partition.txt",
)
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# CelebA faces: crop the central 140x140 square of the 178x218 aligned images before resizing,
# the crop used by the DDPM and DDIM CelebA experiments.
_CELEBA_CROP = 140


class DatasetFilesMissingError(FileNotFoundError):
    """Raised when the files of an image data set are not under the data root."""


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the data root: ``data_dir``, else ``$DLPM_DATA``, else ``./data``.

    The directory is not created.
    """
    if data_dir is not None:
        return Path(data_dir)
    from_environment = os.environ.get("DLPM_DATA")
    if from_environment:
        return Path(from_environment)
    return Path("data")


def dataset_channels(name: str) -> int:
    """Return the number of image channels of data set ``name`` (1 or 3)."""
    _check_name(name)
    return _CHANNELS[name]


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """Map images from [0, 1] to the model range [-1, 1] (``2 x - 1``)."""
    return 2.0 * x - 1.0


def from_model_range(x: torch.Tensor) -> torch.Tensor:
    """Map images from the model range [-1, 1] to [0, 1], clipping values outside."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def _check_name(name: str) -> None:
    if name not in IMAGE_DATASETS:
        raise ValueError(f"unknown image data set {name!r}; choose one of {IMAGE_DATASETS}")


def _missing_error(name: str, folder: Path, missing: Sequence[str], hint: str) -> None:
    listing = ", ".join(missing)
    raise DatasetFilesMissingError(
        f"{name} files not found: put {listing} in {folder} ({hint}), or set data.download:"
        " true (--download on the command line) to fetch them"
    )


class ImageTensorDataset(Dataset):
    """Images held in memory, returned in [-1, 1] with an optional random horizontal flip.

    Args:
        images: tensor (N, C, H, W), uint8 or float, with values in [0, ``max_value``].
        labels: tensor (N,) of class indices.
        max_value: value that maps to 1 (255 for uint8 files, 16 for scikit-learn digits).
        image_size: resize to (image_size, image_size) once, at construction (bilinear,
            antialiased when shrinking); None keeps the stored size.
        random_flip: flip each image left-right with probability 1/2, drawn from torch's global
            generator (DataLoader workers seed it per worker).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        max_value: float,
        image_size: int | None = None,
        random_flip: bool = False,
    ) -> None:
        if images.ndim != 4 or labels.shape != images.shape[:1]:
            raise ValueError(
                f"images must be (N, C, H, W) and labels (N,), got {tuple(images.shape)} "
                f"and {tuple(labels.shape)}"
            )
        if image_size is not None and tuple(images.shape[-2:]) != (image_size, image_size):
            images = _resize(images, image_size)
        self.images = images
        self.labels = labels.long()
        self.max_value = float(max_value)
        self.random_flip = random_flip

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = to_model_range(self.images[index].float() / self.max_value)
        if self.random_flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image, int(self.labels[index])


def _resize(images: torch.Tensor, image_size: int, chunk: int = 4096) -> torch.Tensor:
    """Resize (N, C, H, W) images bilinearly; uint8 input is rounded back to uint8."""
    if image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size}")
    shrinking = image_size < min(images.shape[-2:])
    resized = []
    # Chunks bound the float32 copy made for interpolation (4096 CIFAR images: 50 MB).
    for start in range(0, images.shape[0], chunk):
        block = images[start : start + chunk].float()
        block = F.interpolate(
            block, size=(image_size, image_size), mode="bilinear", antialias=shrinking
        )
        if images.dtype == torch.uint8:
            block = block.round().clamp(0, 255).to(torch.uint8)
        resized.append(block)
    return torch.cat(resized)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not.

    Format (LeCun et al., yann.lecun.com/exdb/mnist): two zero bytes, a type code (0x08 for
    unsigned bytes), the number of dimensions, one big-endian int32 per dimension, then the data.

    Returns:
        uint8 array with the stored shape, e.g. (N, 28, 28) for images and (N,) for labels.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (header {raw[:4]!r})")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(shape):
        raise ValueError(f"{path} is truncated or corrupt: {data.size} values for shape {shape}")
    # Copy out of the read-only bytes buffer so torch.from_numpy gets a writable array.
    return data.reshape(shape).copy()


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def load_mnist(root: Path, *, train: bool, download: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read MNIST from ``root/MNIST/raw`` (IDX files, ``.gz`` or decompressed).

    Returns:
        images uint8 (N, 1, 28, 28) and labels int64 (N,).
    """
    folder = root / "MNIST" / "raw"
    stems = _MNIST_FILES[train]
    paths = [_find_idx(folder, stem) for stem in stems]
    if any(path is None for path in paths) and download:
        import torchvision

        torchvision.datasets.MNIST(str(root), train=train, download=True)
        paths = [_find_idx(folder, stem) for stem in stems]
    if any(path is None for path in paths):
        missing = [f"{stem}.gz" for stem, path in zip(stems, paths, strict=True) if path is None]
        _missing_error("MNIST", folder, missing, "the IDX files, gzipped or not")

    images = read_idx(paths[0])
    labels = read_idx(paths[1]).astype(np.int64)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(
            f"MNIST files in {folder} disagree: images {images.shape}, labels {labels.shape}"
        )
    return images[:, None], labels


def load_cifar10(
    root: Path, *, train: bool, download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR-10 from the python batches in ``root/cifar-10-batches-py``.

    The batches are Python pickles (the format of the official archive), so only load files
    from a trusted source. No md5 check is made.

    Returns:
        images uint8 (N, 3, 32, 32) and labels int64 (N,), in file order.
    """
    folder = root / _CIFAR_FOLDER
    names = _CIFAR_FILES[train]
    if download and not all((folder / name).is_file() for name in names):
        import torchvision

        torchvision.datasets.CIFAR10(str(root), train=train, download=True)
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        _missing_error("CIFAR-10", folder, missing, "the python batches of cifar-10-python.tar.gz")

    images, labels = [], []
    for name in names:
        with open(folder / name, "rb") as handle:
            batch = pickle.load(handle, encoding="latin1")
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch["labels"], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def long_tail_counts(
    max_count: int, num_classes: int = 10, imbalance_factor: float = 100.0
) -> list[int]:
    """Return the exponential long-tailed class profile of Cao et al. (LDAM, NeurIPS 2019).

    ``n_c = floor(max_count * imbalance_factor**(-c / (num_classes - 1)))`` for class c, so the
    first class keeps ``max_count`` images and the last ``max_count / imbalance_factor``. With
    CIFAR-10 (5000 per class) and factor 100: 5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50.
    """
    if imbalance_factor < 1:
        raise ValueError(f"imbalance_factor must be >= 1, got {imbalance_factor}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    counts = []
    for c in range(num_classes):
        exact = max_count * imbalance_factor ** (-c / (num_classes - 1))
        # The small offset keeps exact integers (5000 / 100 = 50) from rounding down to 49.
        counts.append(int(math.floor(exact + 1e-9)))
    return counts


def long_tail_indices(
    labels: np.ndarray, imbalance_factor: float, seed: int = 0
) -> tuple[np.ndarray, list[int]]:
    """Choose a long-tailed subset of a class-balanced data set.

    Class c keeps ``long_tail_counts(n_min, K, imbalance_factor)[c]`` images, with ``n_min``
    the size of the smallest class and K the number of classes. Within each class the images
    are a uniform choice without replacement from ``numpy.random.default_rng(seed)``, so the
    subset depends only on ``seed`` and the file order.

    Returns:
        sorted indices into ``labels`` and the list of kept counts per class.
    """
    classes = np.unique(labels)
    per_class = [np.flatnonzero(labels == c) for c in classes]
    counts = long_tail_counts(min(len(i) for i in per_class), len(classes), imbalance_factor)
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(indices, size=n, replace=False)
        for indices, n in zip(per_class, counts, strict=True)
    ]
    return np.sort(np.concatenate(chosen)), counts


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """Return scikit-learn's 1,797 handwritten digits: float (N, 1, 8, 8) in 0..16, labels (N,)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.float32)[:, None], digits.target.astype(np.int64)


class ImageFolderDataset(Dataset):
    """PNG and JPEG files found recursively under a folder, read lazily with Pillow.

    Images are converted to RGB, center-cropped to a square and resized (bilinear) to
    ``image_size``. When every image sits inside a subfolder of ``folder``, the label is the
    index of that top-level subfolder in sorted order. Otherwise every label is 0.

    Args:
        folder: folder to search.
        image_size: output size; None requires all images to be square and of one size.
        random_flip: flip each image left-right with probability 1/2.
    """

    def __init__(
        self, folder: str | os.PathLike, image_size: int | None = None, random_flip: bool = False
    ) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            _missing_error("image_folder", self.folder, ["PNG or JPEG files"], "folder not found")
        self.paths = sorted(
            p for p in self.folder.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES
        )
        if not self.paths:
            _missing_error("image_folder", self.folder, ["PNG or JPEG files"], "none found")

        relative = [p.relative_to(self.folder).parts for p in self.paths]
        if all(len(parts) > 1 for parts in relative):
            self.classes = sorted({parts[0] for parts in relative})
            index = {name: i for i, name in enumerate(self.classes)}
            self.labels = [index[parts[0]] for parts in relative]
        else:
            self.classes = [""]
            self.labels = [0] * len(self.paths)

        if image_size is None:
            # Opening reads only the header, so this check does not decode the images.
            sizes = set()
            for path in self.paths:
                with Image.open(path) as image:
                    sizes.add(image.size)
            if len(sizes) != 1 or next(iter(sizes))[0] != next(iter(sizes))[1]:
                raise ValueError(
                    f"images in {self.folder} have sizes {sorted(sizes)[:5]}; set image_size to "
                    "crop and resize them to one square size"
                )
        self.image_size = image_size
        self.random_flip = random_flip

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[index]) as file:
            image = file.convert("RGB")
        if self.image_size is not None:
            image = _center_crop_resize(image, self.image_size)
        array = np.asarray(image, dtype=np.float32) / 255.0
        tensor = to_model_range(torch.from_numpy(array).permute(2, 0, 1).contiguous())
        if self.random_flip and torch.rand(()) < 0.5:
            tensor = tensor.flip(-1)
        return tensor, self.labels[index]


def _center_crop_resize(image: Image.Image, size: int, crop: int | None = None) -> Image.Image:
    width, height = image.size
    side = min(width, height) if crop is None else min(crop, width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != size:
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return image


class _CelebADataset(Dataset):
    """torchvision's CelebA (label 0), center-cropped to 140 pixels and resized."""

    def __init__(self, root: Path, train: bool, image_size: int, random_flip: bool, download: bool):
        import torchvision

        folder = root / "celeba"
        missing = [name for name in _CELEBA_FILES if not (folder / name).exists()]
        if missing and not download:
            _missing_error("CelebA", folder, missing, "the aligned images folder and annotations")
        split = "train" if train else "test"
        self.dataset = torchvision.datasets.CelebA(
            str(root), split=split, target_type=[], download=download
        )
        self.image_size = image_size
        self.random_flip = random_flip

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, _ = self.dataset[index]
        image = _center_crop_resize(image.convert("RGB"), self.image_size, crop=_CELEBA_CROP)
        array = np.asarray(image, dtype=np.float32) / 255.0
        tensor = to_model_range(torch.from_numpy(array).permute(2, 0, 1).contiguous())
        if self.random_flip and torch.rand(()) < 0.5:
            tensor = tensor.flip(-1)
        return tensor, 0


def get_image_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    train: bool = True,
    image_size: int | None = None,
    random_flip: bool = False,
    download: bool = False,
    imbalance_factor: float = 100.0,
    seed: int = 0,
) -> Dataset:
    """Build an image data set yielding (image (C, H, W) in [-1, 1], label int).

    Args:
        name: one of :data:`IMAGE_DATASETS`.
        data_dir: data root (see :func:`resolve_data_dir`); for ``image_folder``, the folder of
            images itself. ``digits`` needs no files.
        train: training split, else test split. ``cifar10_lt`` with ``train=False`` returns
            the balanced CIFAR-10 test set. ``image_folder`` and ``digits`` ignore it.
        image_size: square output size; None keeps the native size (28 for MNIST, 32 for
            CIFAR-10, 8 for digits, 64 for CelebA).
        random_flip: random horizontal flip with probability 1/2.
        download: let torchvision download missing MNIST, CIFAR-10 or CelebA files.
        imbalance_factor: ratio of the largest to the smallest class for ``cifar10_lt``.
        seed: seed of the per-class choice of ``cifar10_lt``.

    Raises:
        DatasetFilesMissingError: the files are missing and ``download`` is false. Nothing is
            written in that case.
    """
    _check_name(name)
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")
    root = resolve_data_dir(data_dir)
    size = image_size if image_size is not None else _NATIVE_SIZES.get(name)

    if name == "image_folder":
        return ImageFolderDataset(root, image_size=image_size, random_flip=random_flip)
    if name == "celeba":
        return _CelebADataset(root, train, size, random_flip, download)

    if name == "digits":
        images, labels = load_digits_images()
        max_value = 16.0
    elif name == "mnist":
        images, labels = load_mnist(root, train=train, download=download)
        max_value = 255.0
    else:
        images, labels = load_cifar10(root, train=train, download=download)
        max_value = 255.0
        if name == "cifar10_lt" and train:
            keep, counts = long_tail_indices(labels, imbalance_factor, seed)
            images, labels = images[keep], labels[keep]
            logger.info(
                "cifar10_lt: imbalance factor %g, %d images, class counts %s",
                imbalance_factor,
                len(keep),
                counts,
            )

    return ImageTensorDataset(
        torch.from_numpy(np.ascontiguousarray(images)),
        torch.from_numpy(labels),
        max_value=max_value,
        image_size=size,
        random_flip=random_flip,
    )
