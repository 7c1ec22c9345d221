"""A torch ``IterableDataset`` of fixed-length genome windows, deterministic per (seed, index).

Every window has a global index ``i``; the window of index ``i`` is a pure function of
``(seed, i)`` (and the intervals), so any process can compute it without coordination:

* ``mode="random"``: a start drawn uniformly over every valid window start of the usable
  intervals (length-weighted), from a counter-based hash of ``(seed, i, attempt)``. A draw whose
  N fraction exceeds ``max_n_frac`` (or that has no A/C/G/T at all) is redrawn with the next
  attempt, so index ``i`` always yields one window and an all-N window is never yielded.
* ``mode="tile"``: index ``i`` is the ``i``-th tile of a grid (stride = window by default) over the
  intervals; with ``num_windows`` below the number of tiles, the indices take evenly spaced tiles.
  A tile over ``max_n_frac`` N is skipped (the index yields nothing).

Sharding. Indices are handed out in blocks of ``block_size`` consecutive indices (the DataLoader
batch size). Block ``b`` of the stream (``b = 0, 1, ...`` after ``start_index``) goes to DataLoader
worker ``w`` of ``W`` and DDP rank ``r`` of ``R`` when ``b mod (R*W) == w*R + r``; the k-th block read
by that (rank, worker) covers indices ``start_index + (k*R*W + w*R + r) * block_size + [0, block_size)``.
Because a DataLoader serves its workers' batches round-robin, training step ``s`` of rank ``r``
receives block ``s*R + r``: after ``S`` steps the ranks together have consumed exactly the indices
``[start_index, start_index + S*R*block_size)``, so ``start_index + S*R*block_size`` resumes the
stream exactly, for any worker count (and any rank count) on resume.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from dnadiff.data.fasta import Genome, open_genome
from dnadiff.data.intervals import Intervals
from dnadiff.data.tokenizer import NUM_BASES, N
from dnadiff.rc import reverse_complement
from dnadiff.errors import UserError

_MASK64 = (1 << 64) - 1
MODES = ("random", "tile")


def splitmix64(x: int) -> int:
    """The SplitMix64 finaliser: a bijective 64-bit mix of ``x`` (Steele, Lea, Flood 2014)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def counter_hash(seed: int, index: int, attempt: int) -> int:
    """A 64-bit pseudo-random value that is a pure function of (seed, index, attempt)."""
    return splitmix64(splitmix64(splitmix64(seed & _MASK64) ^ (index & _MASK64)) ^ attempt)


def _shard_of_process(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class GenomeWindows(IterableDataset):
    """Windows of ``window`` bp from ``intervals`` of the genome at ``genome_path``.

    Args:
        genome_path: plain or bgzip FASTA (opened lazily, once per worker process).
        intervals: usable intervals (e.g. one split of ``make_splits``).
        window: window length L in bp.
        mode: "random" (uniform over valid starts, infinite unless ``num_windows``) or "tile".
        seed: stream seed.
        max_n_frac: largest accepted fraction of N in a window (windows without A/C/G/T never pass).
        rc_aug: reverse-complement each window with probability 1/2 (from the same hash).
        start_index: first global index of the stream (resume point).
        num_windows: end of the stream (indices < num_windows); None = infinite (random) or every tile.
        stride: tile stride in bp (default: ``window``).
        block_size: consecutive indices per shard block (set it to the DataLoader batch size).
        rank, world_size: DDP shard; None = from torch.distributed when initialised, else 0 of 1.
        max_attempts: random draws per index before giving up on a mostly-N split.
    Yields:
        dict with ``tokens`` LongTensor[L] (dnadiff ids, reverse-complemented on strand -1),
        ``loss_mask`` BoolTensor[L] (True on A/C/G/T), ``contig`` int, ``start`` int (0-based, + strand
        coordinates), ``strand`` int (+1/-1), ``index`` int (global index).
    """

    def __init__(self, genome_path: str | os.PathLike, intervals: Intervals, window: int, *,
                 mode: str = "random", seed: int = 0, max_n_frac: float = 0.1, rc_aug: bool = False,
                 start_index: int = 0, num_windows: int | None = None, stride: int | None = None,
                 block_size: int = 1, rank: int | None = None, world_size: int | None = None,
                 max_attempts: int = 64):
        super().__init__()
        if mode not in MODES:
            raise UserError(f"window mode {mode!r} is not one of {', '.join(MODES)}")
        if window < 1 or block_size < 1 or start_index < 0 or not 0.0 <= max_n_frac <= 1.0:
            raise UserError(f"bad window settings (window={window}, block_size={block_size}, "
                            f"start_index={start_index}, max_n_frac={max_n_frac}): use positive sizes "
                            f"and 0 <= max_n_frac <= 1")
        self.genome_path = Path(genome_path)
        self.intervals = intervals
        self.window = int(window)
        self.mode = mode
        self.seed = int(seed)
        self.max_n_frac = float(max_n_frac)
        self.rc_aug = bool(rc_aug)
        self.start_index = int(start_index)
        self.block_size = int(block_size)
        self.rank, self.world_size = rank, world_size
        self.max_attempts = int(max_attempts)
        self.stride = int(stride or window)
        if mode == "random":
            per_interval = np.maximum(intervals.lengths - self.window + 1, 0)
        else:
            per_interval = np.where(intervals.lengths >= self.window,
                                    (intervals.lengths - self.window) // self.stride + 1, 0)
        self._count = per_interval
        self._cum = np.cumsum(per_interval)
        self.total = int(self._cum[-1]) if len(per_interval) else 0
        if self.total == 0:
            longest = int(intervals.lengths.max()) if len(intervals) else 0
            raise UserError(f"no interval is at least {window} bp long (the longest has {longest} bp): "
                            f"use a shorter window or more intervals")
        if mode == "tile":
            self.end_index = self.total if num_windows is None else min(int(num_windows), self.total)
        else:
            self.end_index = None if num_windows is None else int(num_windows)
        self._genome: Genome | None = None
        self._genome_pid: int | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_genome"], state["_genome_pid"] = None, None  # file handles never cross processes
        return state

    @property
    def genome(self) -> Genome:
        """This process's own handle on the genome (reopened after a fork)."""
        if self._genome is None or self._genome_pid != os.getpid():
            self._genome = open_genome(self.genome_path)
            self._genome_pid = os.getpid()
        return self._genome

    def _locate(self, position: int, stride: int) -> tuple[int, int]:
        """(contig, start) of the ``position``-th valid start (``stride`` bp apart within an interval)."""
        j = int(np.searchsorted(self._cum, position, side="right"))
        offset = position - (int(self._cum[j]) - int(self._count[j]))
        return int(self.intervals.contig[j]), int(self.intervals.start[j]) + offset * stride

    def _accept(self, tokens: torch.Tensor) -> bool:
        num_n = int((tokens == N).sum())
        return num_n < self.window and num_n <= self.max_n_frac * self.window

    def _item(self, index: int, contig: int, start: int, tokens: torch.Tensor, strand: int) -> dict:
        if strand < 0:
            tokens = reverse_complement(tokens)
        return {"tokens": tokens, "loss_mask": tokens < NUM_BASES, "contig": contig, "start": start,
                "strand": strand, "index": index}

    def window_at(self, index: int) -> dict | None:
        """The window of global index ``index`` (a pure function of seed and index), or None for a
        tile skipped for its N content."""
        if self.mode == "tile":
            tile = index if self.end_index >= self.total else index * self.total // self.end_index
            contig, start = self._locate(tile, self.stride)
            tokens = self.genome.fetch(contig, start, start + self.window)
            strand = -1 if self.rc_aug and counter_hash(self.seed, index, 0) >> 63 else 1
            return self._item(index, contig, start, tokens, strand) if self._accept(tokens) else None
        for attempt in range(self.max_attempts):
            draw = counter_hash(self.seed, index, attempt)
            contig, start = self._locate(draw % self.total, 1)
            tokens = self.genome.fetch(contig, start, start + self.window)
            if self._accept(tokens):
                strand = -1 if self.rc_aug and draw >> 63 else 1
                return self._item(index, contig, start, tokens, strand)
        raise UserError(f"no window with at most {self.max_n_frac:.0%} N found in {self.max_attempts} draws: "
                        f"the intervals are mostly N; raise max_n_frac or restrict them with a BED file")

    def shard_indices(self, rank: int, world_size: int, worker: int, num_workers: int) -> Iterator[int]:
        """Global indices read by (rank, worker), in stream order (infinite for an endless stream)."""
        stride = world_size * num_workers
        slot = worker * world_size + rank
        block = 0
        while True:
            first = self.start_index + (block * stride + slot) * self.block_size
            for index in range(first, first + self.block_size):
                if self.end_index is not None and index >= self.end_index:
                    return
                yield index
            block += 1

    def __iter__(self) -> Iterator[dict]:
        rank, world_size = _shard_of_process(self.rank, self.world_size)
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for index in self.shard_indices(rank, world_size, worker, num_workers):
            item = self.window_at(index)
            if item is not None:
                yield item
