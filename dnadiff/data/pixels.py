"""Images as token sequences: each channel value of each pixel is one token.

Sources:

- CIFAR-10 from a local copy of its standard python batch files (``data_batch_1`` .. ``data_batch_5``
  for training, ``test_batch`` for evaluation): pickled dicts holding ``b"data"`` (uint8 [N, 3072], each
  row the red, then green, then blue 32x32 plane in row-major order) and ``b"labels"`` (N ints 0..9).
  32x32x3 images, 256 levels: sequences of 3072 tokens over V = 256.
- scikit-learn's bundled ``load_digits`` (no download): 1797 8x8 grey images with 17 levels (0..16):
  sequences of 64 tokens over V = 17. Split: a fixed permutation (seed 0), the last 15% held out.

Sequence order (``order``): ``"interleaved"`` (default, as MD4) is raster order with the channels of
each pixel together: ``[R(0,0), G(0,0), B(0,0), R(0,1), ...]``, i.e. an [H, W, C] array flattened.
``"planar"`` is channel after channel, each plane in raster order: a [C, H, W] array flattened (the
CIFAR-10 file layout). One-channel images are the same in both.

Ids: 0..V-1 levels, V = the diffusion mask id; images have no padding, so ``loss_mask`` is all True
and embedding tables need V + 1 rows. Bits per token are bits per dimension.
"""
from __future__ import annotations

import codecs
import math
import pickle
import struct
import zlib
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dnadiff.errors import UserError
from dnadiff.atomic import atomic_write

CIFAR10_TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_SHAPE = (32, 32, 3)
DIGITS_SHAPE = (8, 8, 1)
DIGITS_LEVELS = 17
ORDERS = ("interleaved", "planar")


def _checked_dtype(*args):
    """``numpy.dtype`` for the unpickler, refusing object dtypes (they would unpickle arbitrary objects)."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError("an array of Python objects")
    return dtype


def _numpy_helpers() -> dict:
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
        from numpy.core.numeric import _frombuffer
    helpers = {"multiarray._reconstruct": _reconstruct, "multiarray.scalar": scalar, "numeric._frombuffer": _frombuffer}
    out = {}
    for core in ("numpy.core", "numpy._core"):  # files pickled under numpy 1.x or 2.x
        for dotted, fn in helpers.items():
            module, name = dotted.split(".")
            out[(f"{core}.{module}", name)] = fn
    return out


#: the only globals a CIFAR-10 batch file refers to: numpy arrays and dtypes (with the reconstruct
#: helpers of numpy 1.x, ``numpy.core``, and 2.x, ``numpy._core``) and ``_codecs.encode``, which
#: protocol-2 pickles written by Python 3 use for bytes. Everything else is refused.
_CIFAR_GLOBALS = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _checked_dtype,
                  ("_codecs", "encode"): codecs.encode, **_numpy_helpers()}


class _CifarUnpickler(pickle.Unpickler):
    """A pickle reader that admits only what a CIFAR-10 batch holds (dicts, lists, str/bytes, ints,
    numpy arrays and dtypes); any other global, such as ``os.system``, is refused before it is called."""

    def find_class(self, module: str, name: str):
        found = _CIFAR_GLOBALS.get((module, name))
        if found is None:
            raise _Refused(f"{module}.{name}")
        return found


class _Refused(Exception):
    """A pickle global outside :data:`_CIFAR_GLOBALS`."""


def read_cifar10_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch file with a restricted unpickler (no code runs from the file).

    Returns:
        images: uint8[N, 32, 32, 3] (height, width, RGB), labels: int64[N].
    Raises:
        UserError: the file is not a CIFAR-10 batch, or it refers to anything but numpy arrays.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            batch = _CifarUnpickler(handle, encoding="bytes").load()
        if not isinstance(batch, dict):
            raise TypeError(f"a pickled {type(batch).__name__}, not a dict")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except _Refused as err:
        raise UserError(f"{path} refers to {err}, which a CIFAR-10 batch never holds: refusing to read it "
                        f"(it could run code); use the files of 'CIFAR-10 python version'") from None
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError,
            IndexError, MemoryError) as err:
        raise UserError(f"{path} is not a CIFAR-10 python batch file ({err}): download 'CIFAR-10 python version' and unpack it") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise UserError(f"{path}: data has shape {data.shape} for {len(labels)} labels, expected [N, 3072]: is it CIFAR-10?")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def load_cifar10(folder: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Load the CIFAR-10 train (``data_batch_1..5``) or test (``test_batch``) split from a local folder.

    Returns:
        images: uint8[N, 32, 32, 3], labels: int64[N].
    """
    folder = Path(folder)
    names = CIFAR10_TRAIN_FILES if split == "train" else [CIFAR10_TEST_FILE]
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise UserError(
            f"{folder} lacks the CIFAR-10 batch file(s) {', '.join(missing)}: give the unpacked 'cifar-10-batches-py' folder"
        )
    parts = [read_cifar10_batch(folder / name) for name in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits: -> images uint8[1797, 8, 8, 1] over 0..16, labels int64[1797]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.uint8)[..., None], digits.target.astype(np.int64)


def images_to_tokens(images: np.ndarray, order: str = "interleaved") -> torch.Tensor:
    """Images uint8[N, H, W, C] -> tokens LongTensor[N, H*W*C] in the given ``order`` (module docstring)."""
    if order not in ORDERS:
        raise UserError(f"unknown pixel order {order!r}: use 'interleaved' or 'planar'")
    arr = images if order == "interleaved" else images.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(arr).reshape(len(images), -1).astype(np.int64))


def tokens_to_images(tokens: torch.Tensor, shape: tuple[int, int, int], order: str = "interleaved") -> np.ndarray:
    """Inverse of :func:`images_to_tokens`: LongTensor[N, H*W*C] -> int64[N, H, W, C]."""
    H, W, C = shape
    arr = tokens.detach().cpu().numpy().astype(np.int64)
    if order == "interleaved":
        return arr.reshape(-1, H, W, C)
    return arr.reshape(-1, C, H, W).transpose(0, 2, 3, 1)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def write_png(pixels: np.ndarray, path: str | Path) -> None:
    """Write uint8[H, W] (grey) or uint8[H, W, 3] (RGB) as an 8-bit PNG file (zlib, no filter)."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width = pixels.shape[:2]
    color_type = 0 if pixels.ndim == 2 else 2
    rows = pixels.reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 on each scanline
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(raw, 9)) + _png_chunk(b"IEND", b"")

    atomic_write(path, lambda f: f.write(png))


def sample_grid(tokens: torch.Tensor, shape: tuple[int, int, int], levels: int, order: str = "interleaved", pad: int = 1) -> np.ndarray:
    """Tile N token sequences as images on a square-ish grid.

    Args:
        tokens: LongTensor[N, H*W*C] over 0..levels-1 (a MASK id left in a sample is drawn as 0).
        shape: (H, W, C) with C = 1 or 3; levels: number of levels (scaled so that levels-1 -> 255).
        pad: black pixels between images.
    Returns:
        uint8[rows*(H+pad)+pad, cols*(W+pad)+pad] for C = 1, or with a trailing RGB axis for C = 3.
    """
    H, W, C = shape
    images = tokens_to_images(tokens, shape, order)
    images = np.where(images < levels, images, 0)
    images = np.rint(images * (255.0 / (levels - 1))).astype(np.uint8)
    count = len(images)
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    grid = np.zeros((rows * (H + pad) + pad, cols * (W + pad) + pad, C), dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, cols)
        top, left = pad + r * (H + pad), pad + c * (W + pad)
        grid[top : top + H, left : left + W] = image
    return grid[..., 0] if C == 1 else grid


def save_sample_grid(tokens: torch.Tensor, shape: tuple[int, int, int], levels: int, path: str | Path, order: str = "interleaved") -> Path:
    """Save N sampled images (LongTensor[N, H*W*C]) as one PNG grid at ``path`` (see :func:`sample_grid`)."""
    write_png(sample_grid(tokens, shape, levels, order), path)
    return Path(path)


class ImageTokens(Dataset):
    """Item i: {"tokens": LongTensor[L], "loss_mask": BoolTensor[L] (all True), "labels": LongTensor[] class}."""

    def __init__(self, tokens: torch.Tensor, labels: np.ndarray):
        self.tokens, self.labels = tokens, torch.from_numpy(np.asarray(labels, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        tokens = self.tokens[i]
        return {"tokens": tokens, "loss_mask": torch.ones_like(tokens, dtype=torch.bool), "labels": self.labels[i]}


class PixelDataModule(L.LightningDataModule):
    """Lightning data for images; batches {"tokens": LongTensor[B, H*W*C], "loss_mask": BoolTensor[B, H*W*C], "labels": LongTensor[B]}.

    Args:
        source: ``"digits"`` (scikit-learn's bundled 8x8 digits) or a folder holding CIFAR-10's python batch files.
        order: ``"interleaved"`` or ``"planar"`` (module docstring).
        holdout_fraction: for digits only, the share of images held out (CIFAR-10 holds out its test batch).

    Attributes: ``shape`` (H, W, C), ``vocab_size`` (levels, V), ``mask_id`` (V), ``embed_size`` (V + 1),
    ``class_names``, ``num_images`` per split. Validation and test are the same held-out images.
    """

    def __init__(self, source: str | Path, order: str = "interleaved", batch_size: int = 32,
                 holdout_fraction: float = 0.15, num_workers: int = 0):
        super().__init__()
        self.source, self.order = str(source), order
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        if self.source == "digits":
            images, labels = load_digits_images()
            permutation = np.random.default_rng(0).permutation(len(images))
            num_train = len(images) - int(round(holdout_fraction * len(images)))
            train_idx, held_idx = permutation[:num_train], permutation[num_train:]
            splits = {"train": (images[train_idx], labels[train_idx]), "val": (images[held_idx], labels[held_idx])}
            self.shape, self.vocab_size = DIGITS_SHAPE, DIGITS_LEVELS
            self.class_names = [str(d) for d in range(10)]
        else:
            if not Path(self.source).is_dir():
                raise UserError(f"image source {self.source!r} is neither 'digits' nor a folder: give a CIFAR-10 'cifar-10-batches-py' folder")
            splits = {"train": load_cifar10(self.source, "train"), "val": load_cifar10(self.source, "test")}
            self.shape, self.vocab_size = CIFAR10_SHAPE, 256
            self.class_names = list(CIFAR10_CLASSES)
        self.datasets = {name: ImageTokens(images_to_tokens(imgs, order), lbls) for name, (imgs, lbls) in splits.items()}
        self.datasets["test"] = self.datasets["val"]
        self.mask_id = self.vocab_size
        self.embed_size = self.vocab_size + 1
        self.length = self.shape[0] * self.shape[1] * self.shape[2]
        self.num_images = {name: len(ds) for name, ds in self.datasets.items()}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def save_samples(self, tokens: torch.Tensor, path: str | Path) -> Path:
        """Save sampled token sequences LongTensor[N, L] of this source as a PNG grid."""
        return save_sample_grid(tokens, self.shape, self.vocab_size, path, self.order)
