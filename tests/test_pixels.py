"""Pixel data: the CIFAR-10 batch format, token orders, the digits source, PNG grids."""
from __future__ import annotations

import pickle
import re
import struct
import zlib

import numpy as np
import pytest
import torch

from dnadiff.data.pixels import (
    PixelDataModule,
    images_to_tokens,
    load_cifar10,
    read_cifar10_batch,
    sample_grid,
    save_sample_grid,
    tokens_to_images,
    write_png,
)
from dnadiff.errors import UserError


def write_cifar_batch(path, data: np.ndarray, labels: list[int]) -> None:
    """A file in CIFAR-10's exact python format: a pickled dict with bytes keys."""
    with open(path, "wb") as handle:
        pickle.dump({b"batch_label": b"testing batch", b"labels": labels, b"data": data,
                     b"filenames": [b"img%d.png" % i for i in range(len(labels))]}, handle)


def read_png(path) -> tuple[int, int, int, np.ndarray]:
    """Minimal PNG reader for the unfiltered 8-bit files write_png makes: -> (width, height, color type, rows)."""
    blob = path.read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(blob):
        (size,) = struct.unpack(">I", blob[pos : pos + 4])
        kind, payload = blob[pos + 4 : pos + 8], blob[pos + 8 : pos + 8 + size]
        (crc,) = struct.unpack(">I", blob[pos + 8 + size : pos + 12 + size])
        assert crc == zlib.crc32(kind + payload) & 0xFFFFFFFF
        chunks[kind] = payload
        pos += 12 + size
    width, height, depth, color, *_ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=np.uint8).reshape(height, -1)
    assert depth == 8 and (raw[:, 0] == 0).all()  # filter byte 0 on every row
    return width, height, color, raw[:, 1:]


def test_cifar_batch_file_is_read_in_its_exact_layout(tmp_path):
    data = np.zeros((2, 3072), dtype=np.uint8)
    data[0, 0] = 11  # red plane, pixel (0, 0)
    data[0, 1024 + 33] = 22  # green plane, pixel (1, 1)
    data[1, 2048 + 1023] = 33  # blue plane, pixel (31, 31)
    write_cifar_batch(tmp_path / "test_batch", data, [3, 7])
    images, labels = read_cifar10_batch(tmp_path / "test_batch")
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    assert labels.tolist() == [3, 7]
    assert images[0, 0, 0, 0] == 11 and images[0, 1, 1, 1] == 22 and images[1, 31, 31, 2] == 33
    assert images.sum() == 66
    planar = images_to_tokens(images, "planar")
    assert torch.equal(planar, torch.from_numpy(data.astype(np.int64)))  # planar order = the file's own order
    interleaved = images_to_tokens(images, "interleaved")
    assert interleaved[0, 0] == 11 and interleaved[0, 3 * 33 + 1] == 22 and interleaved[1, 3071] == 33


def test_cifar_folder_splits_and_datamodule(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        write_cifar_batch(tmp_path / f"data_batch_{i}", rng.integers(0, 256, (2, 3072), dtype=np.uint8), [i, i])
    write_cifar_batch(tmp_path / "test_batch", rng.integers(0, 256, (3, 3072), dtype=np.uint8), [0, 1, 2])
    images, labels = load_cifar10(tmp_path, "train")
    assert images.shape == (10, 32, 32, 3) and labels.tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    data = PixelDataModule(tmp_path, batch_size=4)
    assert (data.vocab_size, data.embed_size, data.length, data.shape) == (256, 257, 3072, (32, 32, 3))
    assert data.num_images == {"train": 10, "val": 3, "test": 3}
    batch = next(iter(data.val_dataloader()))
    assert batch["tokens"].shape == (3, 3072) and batch["loss_mask"].all() and batch["labels"].tolist() == [0, 1, 2]


def test_cifar_user_errors(tmp_path):
    with pytest.raises(UserError, match="lacks the CIFAR-10 batch file"):
        load_cifar10(tmp_path, "test")
    (tmp_path / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="not a CIFAR-10 python batch file"):
        load_cifar10(tmp_path, "test")
    with pytest.raises(UserError, match="neither 'digits' nor a folder"):
        PixelDataModule(tmp_path / "nowhere")


@pytest.mark.parametrize("order", ["interleaved", "planar"])
def test_token_orders_roundtrip(order):
    images = np.random.default_rng(1).integers(0, 256, (4, 5, 6, 3), dtype=np.uint8)
    tokens = images_to_tokens(images, order)
    assert tokens.shape == (4, 90)
    assert np.array_equal(tokens_to_images(tokens, (5, 6, 3), order), images)


def test_digits_source():
    data = PixelDataModule("digits", batch_size=16)
    assert (data.vocab_size, data.mask_id, data.embed_size, data.length) == (17, 17, 18, 64)
    assert data.num_images == {"train": 1527, "val": 270, "test": 270}
    train = data.datasets["train"].tokens
    assert train.min() == 0 and train.max() == 16
    again = PixelDataModule("digits")
    assert torch.equal(again.datasets["val"].tokens, data.datasets["val"].tokens)  # deterministic split
    assert data.class_names == [str(d) for d in range(10)]


def test_png_grid_by_hand(tmp_path):
    tokens = torch.tensor([[0, 16, 8, 16], [16, 0, 0, 0], [17, 4, 4, 4]])  # 2x2 grey, 17 levels; 17 = MASK
    grid = sample_grid(tokens, (2, 2, 1), levels=17)
    assert grid.shape == (2 * 3 + 1, 2 * 3 + 1)  # 3 images -> 2x2 grid with 1-pixel borders
    assert grid[1:3, 1:3].tolist() == [[0, 255], [128, 255]]  # 8 * 255 / 16 = 127.5 -> 128
    assert grid[1:3, 4:6].tolist() == [[255, 0], [0, 0]]
    assert grid[4:6, 1:3].tolist() == [[0, 64], [64, 64]]  # MASK drawn as 0; 4 * 255 / 16 = 63.75 -> 64
    assert grid[4:6, 4:6].sum() == 0 and grid[0].sum() == 0
    path = save_sample_grid(tokens, (2, 2, 1), 17, tmp_path / "grid.png")
    width, height, color, rows = read_png(path)
    assert (width, height, color) == (7, 7, 0) and np.array_equal(rows, grid)


def test_rgb_png_is_readable_by_matplotlib(tmp_path):
    image = np.random.default_rng(2).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    write_png(image, tmp_path / "rgb.png")
    matplotlib_image = pytest.importorskip("matplotlib.image")
    decoded = matplotlib_image.imread(tmp_path / "rgb.png")  # floats in [0, 1]
    assert np.array_equal(np.rint(decoded * 255).astype(np.uint8), image)


class _CreatesFile:
    """Unpickling this runs ``open(path, "w")``: a stand-in for any code a crafted batch could run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batch_with_code_is_refused_and_runs_nothing(tmp_path, protocol):
    victim = tmp_path / "pwned"
    folder = tmp_path / "cifar"
    folder.mkdir()
    payload = {b"labels": [1], b"data": np.zeros((1, 3072), np.uint8), b"x": _CreatesFile(victim)}
    (folder / "test_batch").write_bytes(pickle.dumps(payload, protocol=protocol))
    pickle.loads((folder / "test_batch").read_bytes())  # the payload is live: plain pickle creates the file
    assert victim.exists()
    victim.unlink()
    with pytest.raises(UserError) as err:
        read_cifar10_batch(folder / "test_batch")
    assert not victim.exists()
    message = str(err.value)
    assert "\n" not in message and re.search(r"refers to \w+\.open, ", message) and "CIFAR-10" in message


def test_cifar_batch_with_object_array_is_refused(tmp_path):
    data = np.empty((1, 3072), dtype=object)
    data[:] = 0
    with open(tmp_path / "test_batch", "wb") as handle:
        pickle.dump({b"labels": [1], b"data": data}, handle, protocol=2)
    with pytest.raises(UserError, match="not a CIFAR-10 python batch"):
        read_cifar10_batch(tmp_path / "test_batch")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batch_reads_under_every_pickle_protocol(tmp_path, protocol):
    data = np.arange(2 * 3072, dtype=np.int64).reshape(2, 3072).astype(np.uint8)
    with open(tmp_path / "data_batch_1", "wb") as handle:
        pickle.dump({b"batch_label": b"x", b"labels": [4, 9], b"data": data,
                     b"filenames": [b"a.png", b"b.png"]}, handle, protocol=protocol)
    images, labels = read_cifar10_batch(tmp_path / "data_batch_1")
    assert labels.tolist() == [4, 9]
    assert images[1, 0, 0, 0] == data[1, 0] and images[1, 0, 0, 1] == data[1, 1024] and images[0, 31, 31, 2] == data[0, 3071]
