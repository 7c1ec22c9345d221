"""Text as token sequences: character level in the text8 format, or byte level on any UTF-8 file.

Two tokenizations (``level``):

- ``"char"`` — the text8 format: 27 symbols, ``a``..``z`` = 0..25 and space = 26 (V = 27). Any text is
  first normalized the way text8 was made from Wikipedia: lower-cased, each digit spelled out
  (``"7"`` -> ``" seven "``), every other character a space, runs of spaces collapsed to one.
  The real text8 file is already in this form and passes through unchanged.
- ``"byte"`` — the raw UTF-8 bytes, V = 256 (bits per token are then bits per byte).

Ids: 0..V-1 real tokens, V = the diffusion mask id, V + 1 = PAD (only in the last, partial
validation/test chunk, where ``loss_mask`` is False); embedding tables are ``V + 2`` wide.

Split (deterministic, contiguous, no chunk crosses it): the token stream is cut into train = the
first ``1 - val_fraction - test_fraction``, then validation, then test. With the defaults (0.05,
0.05) the real 100M-character text8 gives its standard 90M / 5M / 5M split. Each part is cut into
non-overlapping chunks of ``length`` tokens (256 as in MD4's text8 runs); the train part drops its
tail, validation and test keep theirs, padded, so that every held-out character is scored once.
"""
from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dnadiff.errors import UserError

TEXT8_ALPHABET = "abcdefghijklmnopqrstuvwxyz "
TEXT8_SPACE = 26
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
LEVELS = {"char": len(TEXT8_ALPHABET), "byte": 256}

# byte -> text8 id after lower-casing; every non-letter byte is a space
_TEXT8_LUT = np.full(256, TEXT8_SPACE, dtype=np.uint8)
for _i, _ch in enumerate(TEXT8_ALPHABET[:26]):
    _TEXT8_LUT[ord(_ch)] = _i
    _TEXT8_LUT[ord(_ch.upper())] = _i


def encode_text8(text: str) -> np.ndarray:
    """Encode any text in the text8 format: -> uint8[N] of ids over 0..26 (a..z, space).

    Lower-cases, spells each digit as its English word between spaces, turns every other character
    (punctuation, newlines, each byte of a non-ASCII character) into a space and collapses runs of
    spaces into one (a leading or trailing space is kept, as in text8 itself).
    """
    for digit, word in enumerate(DIGIT_WORDS):
        text = text.replace(str(digit), f" {word} ")
    ids = _TEXT8_LUT[np.frombuffer(text.encode("utf-8"), dtype=np.uint8)]
    repeated_space = np.zeros(len(ids), dtype=bool)
    repeated_space[1:] = (ids[1:] == TEXT8_SPACE) & (ids[:-1] == TEXT8_SPACE)
    return ids[~repeated_space]


def normalize_text8(text: str) -> str:
    """The text8 form of any text (see :func:`encode_text8`): a string over a..z and single spaces."""
    return decode_text8(encode_text8(text))


def decode_text8(ids) -> str:
    """Decode text8 ids (any int array or LongTensor[N]; ids >= 27 print as '_') into a string."""
    arr = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64)
    table = np.frombuffer((TEXT8_ALPHABET + "_").encode("ascii"), dtype=np.uint8)
    return table[np.minimum(arr, len(TEXT8_ALPHABET))].tobytes().decode("ascii")


def encode_bytes(text: str) -> np.ndarray:
    """Encode text as its UTF-8 bytes: -> uint8[N] over 0..255."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def decode_bytes(ids) -> str:
    """Decode byte ids (LongTensor[N] or array; ids >= 256, i.e. MASK/PAD, dropped) into text, invalid UTF-8 replaced."""
    arr = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64)
    return arr[arr < 256].astype(np.uint8).tobytes().decode("utf-8", errors="replace")


def read_text_tokens(path: str | Path, level: str = "char") -> np.ndarray:
    """Read a UTF-8 text file into a token stream: -> uint8[N] (text8 ids for "char", bytes for "byte")."""
    if level not in LEVELS:
        raise UserError(f"unknown text level {level!r}: use 'char' (text8 format, 27 symbols) or 'byte' (256 symbols)")
    path = Path(path)
    if not path.is_file():
        raise UserError(f"text file {path} not found: give the path of a UTF-8 text file")
    raw = path.read_bytes()
    if level == "byte":
        return np.frombuffer(raw, dtype=np.uint8).copy()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}): convert it to UTF-8 or use byte level") from None
    return encode_text8(text)


def split_stream(tokens: np.ndarray, val_fraction: float, test_fraction: float) -> dict[str, np.ndarray]:
    """Cut a token stream uint8[N] into contiguous {"train", "val", "test"} parts (in that order)."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise UserError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must be >= 0 and sum below 1")
    n = len(tokens)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    n_train = n - n_val - n_test
    return {"train": tokens[:n_train], "val": tokens[n_train : n_train + n_val], "test": tokens[n_train + n_val :]}


class TokenChunks(Dataset):
    """Non-overlapping chunks of a token stream.

    Item i: {"tokens": LongTensor[length], "loss_mask": BoolTensor[length]} covering tokens
    ``[i * length, (i + 1) * length)``; with ``keep_tail`` the last partial chunk is padded with
    ``pad_id`` (loss_mask False there).
    """

    def __init__(self, tokens: np.ndarray, length: int, pad_id: int, keep_tail: bool):
        self.tokens, self.length, self.pad_id = tokens, length, pad_id
        full, rest = divmod(len(tokens), length)
        self.num = full + (1 if keep_tail and rest else 0)

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        piece = torch.from_numpy(self.tokens[i * self.length : (i + 1) * self.length].astype(np.int64))
        tokens = torch.full((self.length,), self.pad_id, dtype=torch.long)
        tokens[: len(piece)] = piece
        loss_mask = torch.zeros(self.length, dtype=torch.bool)
        loss_mask[: len(piece)] = True
        return {"tokens": tokens, "loss_mask": loss_mask}


class TextDataModule(L.LightningDataModule):
    """Lightning data for one text file; batches {"tokens": LongTensor[B, length], "loss_mask": BoolTensor[B, length]}.

    Attributes after construction: ``vocab_size`` (V), ``mask_id`` (V), ``pad_id`` (V + 1),
    ``embed_size`` (V + 2), ``num_tokens`` per split.
    """

    def __init__(
        self,
        path: str | Path,
        level: str = "char",
        length: int = 256,
        batch_size: int = 32,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        num_workers: int = 0,
    ):
        super().__init__()
        self.path, self.level, self.length = Path(path), level, int(length)
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.parts = split_stream(read_text_tokens(path, level), val_fraction, test_fraction)
        if len(self.parts["train"]) < self.length:
            raise UserError(
                f"{self.path} gives {len(self.parts['train'])} training tokens, fewer than one chunk of {self.length}: "
                "use a longer text or a smaller --length"
            )
        self.vocab_size = LEVELS[level]
        self.mask_id = self.vocab_size
        self.pad_id = self.vocab_size + 1
        self.embed_size = self.vocab_size + 2
        self.num_tokens = {name: len(part) for name, part in self.parts.items()}

    def dataset(self, split: str) -> TokenChunks:
        """The chunks of one split ("train" drops its partial tail, "val"/"test" pad it)."""
        return TokenChunks(self.parts[split], self.length, self.pad_id, keep_tail=split != "train")

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.dataset(split), batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def decode(self, ids: torch.Tensor) -> str:
        """Token ids LongTensor[L] -> text (text8 string or UTF-8 decoded bytes)."""
        return decode_text8(ids) if self.level == "char" else decode_bytes(ids)
