"""Lightning DataModule of genome windows: random training windows, tiled held-out windows.

Training draws random windows from the train split (an endless stream: train with ``max_steps``
and an integer ``val_check_interval``); validation and test tile their split deterministically
(at most ``max_eval_windows`` tiles, evenly spaced). DDP ranks and DataLoader workers read
disjoint windows (see :mod:`dnadiff.data.windows`).

Resuming: the module counts the training batches it hands to the model; ``state_dict()`` (saved by
Lightning inside every checkpoint) records the next unread global index, and ``load_state_dict()``
makes the next training DataLoader start there, so a resumed run continues the exact data stream.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import lightning as L
from torch.utils.data import DataLoader

from dnadiff.data.fasta import open_genome
from dnadiff.data.intervals import DEFAULT_HOLDOUT_FRAC, SPLITS, Intervals, make_splits, parse_region
from dnadiff.data.windows import GenomeWindows
from dnadiff.errors import UserError


class GenomeDataModule(L.LightningDataModule):
    """Windows of a genome FASTA for pretraining and evaluation.

    Args:
        genome: plain or bgzip FASTA path.
        bed: optional BED of usable intervals (``chrom start end [split]``).
        window: window length L in bp.
        batch_size: windows per batch (per rank).
        num_workers: DataLoader worker processes (0 = load in the main process).
        val_contigs, test_contigs: held-out contig names; without them (and without a BED split
            column) the held-out ranges lie at the contig ends.
        holdout_frac: fraction of each contig held out at its end for val and for test when no
            BED split and no held-out contigs are given.
        max_n_frac: largest fraction of N accepted in a window.
        rc_aug: reverse-complement training windows with probability 1/2 (Caduceus-Ph).
        seed: seed of the training stream.
        max_eval_windows: cap on val/test windows (evenly spaced tiles); None = every tile.
        eval_batch_size: batch size of val/test loaders (default: ``batch_size``).
    Batches: dicts with ``tokens`` LongTensor[B, L], ``loss_mask`` BoolTensor[B, L], ``contig``,
        ``start``, ``strand``, ``index`` LongTensor[B].
    Raises:
        UserError (at construction): bad genome, BED or contig names, window longer than every contig.
    """

    def __init__(self, genome: str | os.PathLike, bed: str | os.PathLike | None = None, window: int = 1024,
                 batch_size: int = 32, num_workers: int = 0, val_contigs: Sequence[str] = (),
                 test_contigs: Sequence[str] = (), holdout_frac: float = DEFAULT_HOLDOUT_FRAC,
                 max_n_frac: float = 0.1, rc_aug: bool = False, seed: int = 0,
                 max_eval_windows: int | None = 512, eval_batch_size: int | None = None):
        super().__init__()
        self.genome_path = Path(genome)
        self.window = int(window)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.max_n_frac = float(max_n_frac)
        self.rc_aug = bool(rc_aug)
        self.seed = int(seed)
        self.max_eval_windows = max_eval_windows
        self.genome = open_genome(self.genome_path)
        self.genome.check_window(self.window)
        self.holdout_frac = float(holdout_frac)
        self.splits: dict[str, Intervals] = make_splits(self.genome, bed, val_contigs, test_contigs, holdout_frac)
        self.start_index = 0  # global index of the first training window of this run's stream
        self._train_batches_seen = 0  # training batches handed to the model since start_index

    def _shard(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def next_train_index(self) -> int:
        """Global index of the first training window not yet consumed by any rank."""
        _, world_size = self._shard()
        return self.start_index + self._train_batches_seen * world_size * self.batch_size

    def windows(self, split: str | Intervals, mode: str = "tile", num_windows: int | None = None,
                rc_aug: bool = False, start_index: int = 0, block_size: int | None = None,
                rank: int | None = None, world_size: int | None = None) -> GenomeWindows:
        """A window dataset over a split name ("train", "val", "test") or explicit intervals."""
        if isinstance(split, str):
            if split not in SPLITS:
                raise UserError(f"split {split!r} is not one of {', '.join(SPLITS)}")
            intervals = self.splits[split]
            if len(intervals) == 0:
                raise UserError(f"the {split} split is empty: name --{split}-contigs or give a BED with {split} lines")
            longest = int(intervals.lengths.max())
            if split != "train" and longest < self.window:
                raise UserError(f"the {split} split's longest piece has {longest:,} bp, shorter than the "
                                f"{self.window:,}-bp window: use a shorter data.window, a larger data.holdout_frac "
                                f"(now {self.holdout_frac:g} of each contig) or name --{split}-contigs")
        else:
            intervals = split
        return GenomeWindows(self.genome_path, intervals, self.window, mode=mode, seed=self.seed,
                             max_n_frac=self.max_n_frac, rc_aug=rc_aug, start_index=start_index,
                             num_windows=num_windows, block_size=block_size or self.batch_size,
                             rank=rank, world_size=world_size)

    def check_readable(self) -> None:
        """UserError now, before any training, when the training split yields no usable window (e.g. an
        all-N genome) or the validation split holds no window."""
        self.windows("train", mode="random").window_at(self.start_index)
        self.windows("val", mode="tile")

    def region(self, text: str) -> Intervals:
        """Intervals of a ``chr:start-end`` region (1-based inclusive) of this genome."""
        return parse_region(text, self.genome)

    def _loader(self, dataset: GenomeWindows, batch_size: int) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        """Endless random windows of the train split, starting at :meth:`next_train_index`."""
        rank, world_size = self._shard()
        self.start_index, self._train_batches_seen = self.next_train_index(), 0
        dataset = self.windows("train", mode="random", rc_aug=self.rc_aug, start_index=self.start_index,
                               rank=rank, world_size=world_size)
        return self._loader(dataset, self.batch_size)

    def eval_dataloader(self, split: str | Intervals, num_windows: int | None = None,
                        rank: int | None = None, world_size: int | None = None) -> DataLoader:
        """Deterministic tiled windows of a split or of explicit intervals (at most ``num_windows``)."""
        dataset = self.windows(split, mode="tile", num_windows=num_windows, block_size=self.eval_batch_size,
                               rank=rank, world_size=world_size)
        return self._loader(dataset, self.eval_batch_size)

    def val_dataloader(self) -> DataLoader:
        rank, world_size = self._shard()
        return self.eval_dataloader("val", self.max_eval_windows, rank, world_size)

    def test_dataloader(self) -> DataLoader:
        rank, world_size = self._shard()
        return self.eval_dataloader("test", self.max_eval_windows, rank, world_size)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Count the training batches actually handed to the model (not the prefetched ones)."""
        if self.trainer is not None and self.trainer.training:
            self._train_batches_seen += 1
        return batch

    def state_dict(self) -> dict:
        """Resume state saved in Lightning checkpoints: the next unread training index and the seed."""
        return {"train_start_index": self.next_train_index(), "seed": self.seed, "window": self.window}

    def load_state_dict(self, state: dict) -> None:
        """Continue the training stream of a checkpoint (same seed, next unread index)."""
        if state.get("window", self.window) != self.window:
            raise UserError(f"the checkpoint was trained on {state['window']} bp windows, not {self.window}: "
                            f"resume with the same window length")
        self.seed = int(state["seed"])
        self.start_index, self._train_batches_seen = int(state["train_start_index"]), 0
