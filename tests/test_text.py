"""Text data: text8 normalization and ids, byte level, the deterministic split, chunks and batches."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dnadiff.data.text import (
    TextDataModule,
    decode_bytes,
    decode_text8,
    encode_bytes,
    encode_text8,
    normalize_text8,
    read_text_tokens,
    split_stream,
)
from dnadiff.errors import UserError

REAL_TEXT = Path(__file__).resolve().parents[1] / "data" / "text" / "python_reference_topics.txt"


def test_text8_normalization_by_hand():
    assert normalize_text8("Hello, World!\n\n It's 42.") == "hello world it s four two "
    assert normalize_text8(" anarchism originated as a term") == " anarchism originated as a term"  # text8 itself is unchanged
    assert normalize_text8("Café au lait") == "caf au lait"  # each byte of a non-ASCII letter is a space


def test_text8_ids_by_hand():
    assert encode_text8("abz y").tolist() == [0, 1, 25, 26, 24]
    assert decode_text8([0, 1, 25, 26, 24, 27]) == "abz y_"  # the mask id prints as '_'


def test_byte_level_roundtrip_is_exact_on_utf8():
    text = "naïve café — ∑ 3"
    ids = encode_bytes(text)
    assert len(ids) == len(text.encode("utf-8")) and ids.max() < 256
    assert decode_bytes(torch.from_numpy(ids.astype(np.int64))) == text
    assert decode_bytes(torch.tensor([104, 105, 256, 257])) == "hi"  # MASK and PAD are dropped


def test_real_text_reads_in_both_levels():
    chars = read_text_tokens(REAL_TEXT, "char")
    raw = read_text_tokens(REAL_TEXT, "byte")
    assert len(raw) == REAL_TEXT.stat().st_size == 466196
    assert chars.max() == 26 and len(chars) == len(encode_text8(REAL_TEXT.read_text("utf-8")))
    assert decode_text8(chars[:20]) == "the assert statement"


def test_split_is_contiguous_and_in_order():
    stream = np.arange(100, dtype=np.uint8)
    parts = split_stream(stream, 0.05, 0.05)  # text8's 90M/5M/5M in miniature
    assert parts["train"].tolist() == list(range(90))
    assert parts["val"].tolist() == list(range(90, 95))
    assert parts["test"].tolist() == list(range(95, 100))
    with pytest.raises(UserError, match="sum below 1"):
        split_stream(stream, 0.6, 0.5)


def test_datamodule_chunks_cover_each_heldout_token_once(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abc " * 250)  # 1000 characters, the last a space
    data = TextDataModule(path, level="char", length=64, batch_size=4, val_fraction=0.1, test_fraction=0.1)
    assert (data.vocab_size, data.mask_id, data.pad_id, data.embed_size) == (27, 27, 28, 29)
    assert data.num_tokens == {"train": 800, "val": 100, "test": 100}
    assert len(data.dataset("train")) == 800 // 64  # tail dropped
    val = data.dataset("val")
    assert len(val) == 2  # 64 + 36 padded
    assert int(sum(val[i]["loss_mask"].sum() for i in range(len(val)))) == 100
    assert val[1]["tokens"][36:].eq(28).all() and not val[1]["loss_mask"][36:].any()
    first = data.dataset("train")[0]["tokens"]
    assert decode_text8(first[:8]) == "abc abc "
    batch = next(iter(data.val_dataloader()))
    assert batch["tokens"].shape == (2, 64) and batch["tokens"].dtype == torch.long
    assert batch["loss_mask"].dtype == torch.bool
    assert torch.equal(next(iter(data.val_dataloader()))["tokens"], batch["tokens"])  # deterministic


def test_byte_datamodule_on_real_text():
    data = TextDataModule(REAL_TEXT, level="byte", length=256, batch_size=8)
    assert (data.vocab_size, data.embed_size) == (256, 258)
    batch = next(iter(data.train_dataloader()))
    assert batch["tokens"].shape == (8, 256) and batch["tokens"].max() < 256
    assert sum(data.num_tokens.values()) == 466196


def test_user_errors_name_the_problem(tmp_path):
    with pytest.raises(UserError, match="not found"):
        TextDataModule(tmp_path / "missing.txt")
    (tmp_path / "short.txt").write_text("too short")
    with pytest.raises(UserError, match="fewer than one chunk"):
        TextDataModule(tmp_path / "short.txt", length=256)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        read_text_tokens(tmp_path / "latin1.txt", "char")
    with pytest.raises(UserError, match="unknown text level"):
        read_text_tokens(tmp_path / "latin1.txt", "word")
