"""The DNA-Diffusion DHS set: 47,872 real 200-bp human DNase hypersensitive sites by cell type.

File ``K562_hESCT0_HepG2_GM12878_12k_sequences_per_group.txt.gz`` (tab-separated, with a
header; from the dnadiffusion package). The columns used: ``sequence`` (200 bp, upper case),
``TAG`` (cell type and ENCODE library, e.g. ``GM12878_ENCLB441ZZZ``; the class name is the part
before the first ``_``) and ``data_label`` (the file's own split: ``training``, ``validation``
-- chr2 -- or ``test`` -- chr1). 11,968 sequences per cell type.

:func:`load_dhs` returns the table; :class:`DHSDataModule` yields conditional-pretraining
batches ``{"tokens": LongTensor[B,200], "loss_mask": BoolTensor[B,200], "labels": LongTensor[B]}``.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dnadiff.data.tokenizer import NUM_BASES, encode
from dnadiff.errors import UserError
from dnadiff.paths import kind_of, open_text

FILE_NAME = "K562_hESCT0_HepG2_GM12878_12k_sequences_per_group.txt.gz"
#: class ids in this fixed order (the order of the file's per-cell-type columns).
CLASS_NAMES = ("GM12878", "hESCT0", "K562", "HepG2")
SPLITS = ("training", "validation", "test")
_REQUIRED_COLUMNS = ("sequence", "TAG", "data_label")


def default_dhs_path() -> Path:
    """``$DNADIFF_SHARED/data/dna_diffusion/<file>``, else ``../shared/...`` beside the checkout."""
    shared = os.environ.get("DNADIFF_SHARED", Path(__file__).resolve().parents[2].parent / "shared")
    return Path(shared) / "data" / "dna_diffusion" / FILE_NAME


@dataclass
class DHSData:
    """The DHS table.

    Attributes:
        sequences: S strings of 200 bp.
        labels: int64[S] class id, an index into ``class_names``.
        class_names: the cell types, ``CLASS_NAMES``.
        split: S strings, each ``"training"``, ``"validation"`` or ``"test"``.
    """

    sequences: list[str]
    labels: np.ndarray
    class_names: list[str]
    split: np.ndarray

    def subset(self, split: str) -> "DHSData":
        """Only the rows of one split."""
        if split not in SPLITS:
            raise UserError(f"unknown DHS split {split!r}: use one of {', '.join(SPLITS)}")
        keep = np.flatnonzero(self.split == split)
        return DHSData([self.sequences[i] for i in keep], self.labels[keep], self.class_names, self.split[keep])


def load_dhs(path: str | Path | None = None) -> DHSData:
    """Read the DHS file (gzip or plain text) into a :class:`DHSData`.

    Raises:
        UserError: the file is missing or unreadable, lacks a needed column, has no rows, or a row (named by its
        line) lacks a cell, names an unknown cell type/split, or has an empty, non-DNA or differently long sequence.
    """
    path = Path(path) if path is not None else default_dhs_path()

    if kind_of(path) != "a regular file":
        found = "not found" if kind_of(path) == "missing" else f"is {kind_of(path)}, not a file"
        raise UserError(f"DHS file {path} {found}: pass the path of {FILE_NAME} (from the dnadiffusion package)")
    sequences, labels, split, lines = [], [], [], []
    try:
        with open_text(path, newline="") as handle:  # a byte-order mark is dropped
            rows = csv.DictReader(handle, delimiter="\t")
            missing = [c for c in _REQUIRED_COLUMNS if c not in (rows.fieldnames or [])]
            if missing:
                raise UserError(f"{path} has no column {', '.join(missing)}: it is not the DNA-Diffusion DHS table "
                                f"(tab-separated, with the columns {', '.join(_REQUIRED_COLUMNS)})")
            for row in rows:
                where = f"{path} line {rows.line_num}"
                lacking = [c for c in _REQUIRED_COLUMNS if row.get(c) is None]
                if lacking:
                    raise UserError(f"{where} lacks the {', '.join(lacking)} cell: fill it in or remove the line")
                cell_type = row["TAG"].split("_")[0]
                if cell_type not in CLASS_NAMES or row["data_label"] not in SPLITS:
                    raise UserError(
                        f"{where}: row {row.get('dhs_id', '?')} has cell type {cell_type!r} / split "
                        f"{row['data_label']!r}; expected one of {', '.join(CLASS_NAMES)} / {', '.join(SPLITS)}"
                    )
                seq = row["sequence"].strip().upper()
                if not seq or set(seq) - set("ACGTN"):
                    raise UserError(f"{where}: the sequence {seq[:30]!r} is {'empty' if not seq else 'not DNA'}: "
                                    "give sequences over A, C, G, T (N allowed), or remove the line")
                if sequences and len(seq) != len(sequences[0]):
                    raise UserError(f"{where}: the sequence has {len(seq)} bp but line {lines[0]}'s has "
                                    f"{len(sequences[0])}: every DHS sequence must have the same length")
                sequences.append(seq)
                labels.append(CLASS_NAMES.index(cell_type))
                split.append(row["data_label"])
                lines.append(rows.line_num)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"cannot read the DHS file {path} ({str(err)[:120]}): give the tab-separated {FILE_NAME}") from None
    if not sequences:
        raise UserError(f"{path} has a header but no rows: give the DHS table with its sequences")
    return DHSData(sequences, np.asarray(labels, dtype=np.int64), list(CLASS_NAMES), np.asarray(split))


class DHSDataset(Dataset):
    """Items ``{"tokens": LongTensor[L], "loss_mask": BoolTensor[L], "labels": LongTensor[]}`` of a :class:`DHSData`."""

    def __init__(self, data: DHSData):
        self.tokens = torch.stack([encode(s) for s in data.sequences]) if data.sequences else torch.zeros(0, 0, dtype=torch.long)
        self.labels = torch.from_numpy(data.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        tokens = self.tokens[index]
        return {"tokens": tokens, "loss_mask": tokens < NUM_BASES, "labels": self.labels[index]}


class DHSDataModule(L.LightningDataModule):
    """Conditional-pretraining batches from the DHS file's own training and validation splits.

    Args:
        path: the DHS file (default :func:`default_dhs_path`).
        batch_size: sequences per batch.
        limit: keep at most this many sequences per split (a random, class-mixed subset), for quick runs.
        seed: seed of the subset choice and of the training shuffle.
    """

    def __init__(self, path: str | Path | None = None, batch_size: int = 64, limit: int | None = None, seed: int = 0):
        super().__init__()
        self.path, self.batch_size, self.limit, self.seed = path, batch_size, limit, seed
        self.data: DHSData | None = None

    @property
    def class_names(self) -> list[str]:
        return list(CLASS_NAMES)

    def setup(self, stage: str | None = None) -> None:
        if self.data is None:
            self.data = load_dhs(self.path)

    def check_readable(self) -> None:
        """Read and check the whole table now (UserError naming the line), before a run folder is created."""
        self.setup()

    def _dataset(self, split: str) -> DHSDataset:
        self.setup()
        part = self.data.subset(split)
        if self.limit is not None and len(part.sequences) > self.limit:
            keep = np.sort(np.random.default_rng(self.seed).choice(len(part.sequences), self.limit, replace=False))
            part = DHSData([part.sequences[i] for i in keep], part.labels[keep], part.class_names, part.split[keep])
        return DHSDataset(part)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self._dataset("training"), batch_size=self.batch_size, shuffle=True, drop_last=True,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._dataset("validation"), batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self._dataset("test"), batch_size=self.batch_size)
